package llama

import (
	"cmp"
	"slices"
)

// sampler picks the next token from logits as run.c's sampler does: argmax
// at temperature 0 (the first maximum on ties), otherwise softmax of
// logits/temperature and a draw from the whole distribution or, with
// 0 < top_p < 1, from its nucleus. The draws come from run.c's xorshift
// generator, so a seed gives the same tokens every time.
type sampler struct {
	temperature float32
	topP        float32
	rng         uint64
	probIndex   []probIndex // top-p scratch
	// con, when the task asked for structured output, masks what the
	// grammar refuses and picks among the rest (constraint.go).
	con *constraint
}

type probIndex struct {
	prob  float32
	index int
}

func newSampler(vocab int, temperature, topP float32, seed uint64) *sampler {
	if seed == 0 {
		seed = 0x9E3779B97F4A7C15 // xorshift must not start at zero
	}
	s := &sampler{temperature: temperature, topP: topP, rng: seed}
	if temperature > 0 && topP > 0 && topP < 1 {
		s.probIndex = make([]probIndex, vocab)
	}
	return s
}

func (s *sampler) randomU32() uint32 {
	s.rng ^= s.rng >> 12
	s.rng ^= s.rng << 25
	s.rng ^= s.rng >> 27
	return uint32((s.rng * 0x2545F4914F6CDD1D) >> 32)
}

func (s *sampler) randomF32() float32 { return float32(s.randomU32()>>8) / 16777216.0 }

// sample chooses a token; it scales logits in place.
func (s *sampler) sample(logits []float32) int {
	if s.con != nil {
		return s.con.sample(s, logits)
	}
	if s.temperature == 0 {
		return argmax(logits)
	}
	for i := range logits {
		logits[i] /= s.temperature
	}
	softmaxFast(logits)
	coin := s.randomF32()
	if s.topP <= 0 || s.topP >= 1 {
		return sampleMult(logits, coin)
	}
	return s.sampleTopP(logits, coin)
}

func argmax(p []float32) int {
	best, bestV := 0, p[0]
	for i, v := range p[1:] {
		if v > bestV {
			best, bestV = i+1, v
		}
	}
	return best
}

func sampleMult(p []float32, coin float32) int {
	var cdf float32
	for i, v := range p {
		cdf += v
		if coin < cdf {
			return i
		}
	}
	return len(p) - 1
}

func (s *sampler) sampleTopP(p []float32, coin float32) int {
	cutoff := (1 - s.topP) / float32(len(p)-1)
	pi := s.probIndex[:0]
	for i, v := range p {
		if v >= cutoff {
			pi = append(pi, probIndex{v, i})
		}
	}
	// Descending probability; equal probabilities by index so the order is
	// deterministic (run.c's qsort leaves it unspecified).
	if len(pi) == 0 { // a nucleus so small that no token reaches the cutoff
		return argmax(p)
	}
	slices.SortFunc(pi, func(a, b probIndex) int {
		if c := cmp.Compare(b.prob, a.prob); c != 0 {
			return c
		}
		return cmp.Compare(a.index, b.index)
	})
	var cum float32
	last := len(pi) - 1
	for i, e := range pi {
		cum += e.prob
		if cum > s.topP {
			last = i
			break
		}
	}
	r := coin * cum
	var cdf float32
	for _, e := range pi[:last+1] {
		cdf += e.prob
		if r < cdf {
			return e.index
		}
	}
	return pi[last].index
}
