package scheduler

import "time"

// QueueScorer prefers short queues. A worker's queue is what waits beyond
// its slots, as the scheduler tracks it, plus what its engine reports
// waiting in the last heartbeat:
//
//	score = (max queue − queue) ÷ (max queue − min queue)   over the candidates; 1 when all are equal
//
// A worker whose telemetry is older than StaleAfter counts as saturated
// (score 0).
type QueueScorer struct {
	StaleAfter time.Duration
}

var _ Scorer = (*QueueScorer)(nil)

func (*QueueScorer) Name() string { return ScorerQueue }

func (s *QueueScorer) Score(req *Request, cands []*Candidate, scores []float64) {
	lo, hi := -1, -1
	for _, c := range cands {
		q := queueDepth(c)
		if lo < 0 || q < lo {
			lo = q
		}
		if q > hi {
			hi = q
		}
	}
	for i, c := range cands {
		switch {
		case c.stale(req.nowNs, s.StaleAfter):
			scores[i] = 0
		case hi == lo:
			scores[i] = 1
		default:
			scores[i] = float64(hi-queueDepth(c)) / float64(hi-lo)
		}
	}
}

func queueDepth(c *Candidate) int { return c.queued() + c.waiting }
