package scheduler

// TTFTScorer prefers the worker with the lowest predicted time to first
// token (see predictTTFT):
//
//	score = min over candidates of predicted TTFT ÷ this candidate's predicted TTFT
//
// so the fastest scores 1 and one twice as slow scores 0.5.
type TTFTScorer struct{}

var _ Scorer = (*TTFTScorer)(nil)

func (*TTFTScorer) Name() string { return ScorerTTFT }

func (*TTFTScorer) Score(req *Request, cands []*Candidate, scores []float64) {
	best := 0.0
	for i := range cands {
		if p := req.predTTFT[i]; best == 0 || p < best {
			best = p
		}
	}
	for i := range cands {
		if p := req.predTTFT[i]; p > 0 {
			scores[i] = best / p
		} else {
			scores[i] = 1
		}
	}
}
