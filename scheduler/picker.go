package scheduler

import "math/rand/v2"

// MaxScorePicker picks the highest total score, breaking ties at random.
type MaxScorePicker struct {
	Rand *rand.Rand
}

var _ Picker = (*MaxScorePicker)(nil)

func (*MaxScorePicker) Name() string { return "max-score" }

func (p *MaxScorePicker) Pick(_ *Request, _ []*Candidate, totals []float64) int {
	best, ties := -1, 0
	for i, s := range totals {
		switch {
		case best < 0 || s > totals[best]:
			best, ties = i, 1
		case s == totals[best]:
			// Reservoir sampling keeps each tied index with equal chance.
			ties++
			if p.Rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

// RoundRobinPicker picks the candidates in turn, ignoring scores: a
// baseline policy.
type RoundRobinPicker struct {
	next uint64
}

var _ Picker = (*RoundRobinPicker)(nil)

func (*RoundRobinPicker) Name() string { return PolicyRoundRobin }

func (p *RoundRobinPicker) Pick(_ *Request, cands []*Candidate, _ []float64) int {
	i := int(p.next % uint64(len(cands)))
	p.next++
	return i
}

// LeastRequestPicker picks the candidate with the fewest tasks assigned
// (queued and in flight), ties at random: a baseline policy.
type LeastRequestPicker struct {
	Rand *rand.Rand
}

var _ Picker = (*LeastRequestPicker)(nil)

func (*LeastRequestPicker) Name() string { return PolicyLeastRequest }

func (p *LeastRequestPicker) Pick(_ *Request, cands []*Candidate, _ []float64) int {
	best, ties := -1, 0
	for i, c := range cands {
		switch {
		case best < 0 || c.assigned < cands[best].assigned:
			best, ties = i, 1
		case c.assigned == cands[best].assigned:
			ties++
			if p.Rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}
