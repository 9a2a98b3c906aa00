package scheduler

import (
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// KVCacheScorer prefers workers with free KV cache and GPU memory:
//
//	score = 1 − max(engine KV-cache usage, highest GPU memory used ÷ total)
//
// from the last heartbeat (the engine's scraped load and NVML). A worker
// whose telemetry is older than StaleAfter counts as saturated (score 0).
type KVCacheScorer struct {
	StaleAfter time.Duration
}

var _ Scorer = (*KVCacheScorer)(nil)

func (*KVCacheScorer) Name() string { return ScorerKVCache }

func (s *KVCacheScorer) Score(req *Request, cands []*Candidate, scores []float64) {
	for i, c := range cands {
		if c.stale(req.nowNs, s.StaleAfter) {
			scores[i] = 0
			continue
		}
		scores[i] = 1 - c.pressure
	}
}

// memoryPressure is computed once per heartbeat.
func memoryPressure(hb *task.Heartbeat) float64 {
	p := clamp01(hb.Load.KVCacheUsage)
	for _, g := range hb.GPUs {
		if g.MemoryTotalMiB > 0 {
			p = max(p, clamp01(float64(g.MemoryUsedMiB)/float64(g.MemoryTotalMiB)))
		}
	}
	return p
}
