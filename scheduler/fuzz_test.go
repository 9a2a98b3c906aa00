package scheduler

import (
	"math"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// FuzzHeartbeatTelemetry feeds arbitrary telemetry (it comes from workers,
// over the network) into a scheduling cycle: nothing panics and every
// weighted total stays within the sum of the weights.
func FuzzHeartbeatTelemetry(f *testing.F) {
	f.Add(0, 0, 0.0, uint64(0), uint64(0), 0, false)
	f.Add(5, 3, 0.5, uint64(40000), uint64(80000), 700, false)
	f.Add(-1, -7, math.NaN(), uint64(90000), uint64(0), -5, true)
	f.Add(math.MaxInt, math.MinInt, math.Inf(1), ^uint64(0), uint64(1), math.MaxInt32, false)
	f.Fuzz(func(t *testing.T, waiting, running int, kv float64, used, total uint64, prompt int, draining bool) {
		h := newHarness(t, Config{})
		h.add("a", 4)
		h.add("b", 4)
		err := h.s.Heartbeat(&task.Heartbeat{WorkerID: "a", Draining: draining,
			Load: task.Load{Waiting: waiting, Running: running, KVCacheUsage: kv},
			GPUs: []task.GPU{{MemoryUsedMiB: used, MemoryTotalMiB: total}}})
		if err != nil {
			t.Fatal(err)
		}
		tk := chat("f")
		tk.PromptTokensHint = prompt
		req := Request{Task: tk, PromptTokens: max(estimatePromptTokens(tk), 1)}
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		if _, err := h.s.cycleLocked(&req); err != nil {
			t.Fatalf("cycle with b healthy: %v", err)
		}
		sum := 0.0
		for _, w := range h.s.weights {
			sum += w
		}
		for i, v := range h.s.scratch.totals[:len(h.s.scratch.cands)] {
			if math.IsNaN(v) || v < 0 || v > sum+1e-9 {
				t.Fatalf("total score %d = %v outside [0, %v]", i, v, sum)
			}
		}
	})
}
