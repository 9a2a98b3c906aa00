package scheduler

import (
	"slices"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Request is one task as the plugins of a scheduling cycle see it.
type Request struct {
	Task *task.Task
	Now  time.Time
	// nowNs is Now in monoNanos.
	nowNs int64
	// PromptTokens and OutputTokens are estimates for scheduling.
	PromptTokens int
	OutputTokens int
	// AffinityKey hashes the prompt prefix (0: no affinity).
	AffinityKey uint64
	// Exclude is a worker not to use (the one a retry left).
	Exclude string
	// Only, when set, is the one worker the task may go to (an audit's
	// re-execution, see DispatchTo).
	Only string

	// predTTFT[i] is the predicted TTFT in seconds of the i-th candidate
	// after filtering, filled once per cycle for scorers and admission.
	predTTFT []float64
}

// Filter narrows the candidates. It returns the survivors, reusing cands'
// backing array.
type Filter interface {
	Name() string
	Filter(req *Request, cands []*Candidate) []*Candidate
}

// Scorer writes a score in [0,1] per candidate into scores (same order; the
// cycle clamps what it writes).
type Scorer interface {
	Name() string
	Score(req *Request, cands []*Candidate, scores []float64)
}

// Picker chooses one candidate by index from the weighted total scores.
type Picker interface {
	Name() string
	Pick(req *Request, cands []*Candidate, totals []float64) int
}

// scorerFactories builds the scorers a Config may name.
var scorerFactories = map[string]func(cfg *Config) Scorer{
	ScorerTTFT:     func(*Config) Scorer { return &TTFTScorer{} },
	ScorerQueue:    func(cfg *Config) Scorer { return &QueueScorer{StaleAfter: cfg.TelemetryStale} },
	ScorerKVCache:  func(cfg *Config) Scorer { return &KVCacheScorer{StaleAfter: cfg.TelemetryStale} },
	ScorerAffinity: func(cfg *Config) Scorer { return &AffinityScorer{MaxLoad: cfg.AffinityLoad} },
}

func scorerNames() []string {
	var out []string
	for n := range scorerFactories {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func clamp01(v float64) float64 {
	switch {
	case v > 1:
		return 1
	case v >= 0:
		return v
	}
	return 0 // negative or NaN
}
