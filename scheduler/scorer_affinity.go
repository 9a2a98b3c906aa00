package scheduler

import "math"

// AffinityScorer sends tasks that share a prompt prefix to the same worker,
// where the engine's prefix cache may already hold it, but yields to load:
// the preferred worker is the first in the key's rendezvous-hash order of
// the candidates that are not overloaded — load (assigned ÷ slots) below
// MaxLoad and assigned + 1 ≤ ⌈Bound × (all assigned + 1) ÷ candidates⌉
// (consistent hashing with bounded loads) — so a hot prefix spills to the
// next worker instead of piling onto one.
//
//	score = 1 for the preferred worker, 0 for the others (0 for all when the task has no key)
type AffinityScorer struct {
	MaxLoad float64
	Bound   float64 // ≥ 1; 0 means 1.25
}

var _ Scorer = (*AffinityScorer)(nil)

func (*AffinityScorer) Name() string { return ScorerAffinity }

func (s *AffinityScorer) Score(req *Request, cands []*Candidate, scores []float64) {
	bound := s.Bound
	if bound < 1 {
		bound = 1.25
	}
	total := 0
	for _, c := range cands {
		total += c.assigned
	}
	limit := int(math.Ceil(bound * float64(total+1) / float64(len(cands))))
	best, bestH := -1, uint64(0)
	for i, c := range cands {
		scores[i] = 0
		if req.AffinityKey == 0 || c.load() >= s.MaxLoad || c.assigned+1 > limit {
			continue
		}
		if h := mix64(req.AffinityKey ^ c.hash); best < 0 || h > bestH {
			best, bestH = i, h
		}
	}
	if best >= 0 {
		scores[best] = 1
	}
}

// mix64 is the SplitMix64 finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
