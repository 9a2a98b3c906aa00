package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func benchScheduler(b *testing.B, policy string, n int) *Scheduler {
	clk := clock.NewFake(t0)
	s, err := New(Config{Policy: policy}, Deps{
		Clock:      clk,
		DialWorker: func(w *task.Registered) Conn { return &scriptConn{url: w.URL} },
		Rand:       rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("w%03d", i)
		s.Upsert(&task.Registered{WorkerID: id, URL: "http://" + id, MaxConcurrency: 64,
			Models: []task.ModelVersion{{Name: testModel, Digest: testDigest}}})
		_ = s.Heartbeat(&task.Heartbeat{WorkerID: id, Load: task.Load{Waiting: i % 5, KVCacheUsage: float64(i%10) / 10},
			GPUs: []task.GPU{{MemoryTotalMiB: 81920, MemoryUsedMiB: 40000}}})
		c := s.workers[id]
		c.assigned = i % 7
		c.assignedTokens = c.assigned * 300
	}
	return s
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecision is one scheduling cycle (filters, scorers, picker,
// admission) over 100 workers, as Dispatch runs it under the lock.
func BenchmarkDecision(b *testing.B) {
	for _, policy := range []string{PolicyTollgate, PolicyLeastRequest, PolicyRoundRobin} {
		b.Run(policy+"/100-workers", func(b *testing.B) {
			s := benchScheduler(b, policy, 100)
			tk := chat("bench")
			tk.PromptTokensHint = 700
			req := Request{Task: tk, PromptTokens: 700, OutputTokens: 200, AffinityKey: s.affinityKey(tk)}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				s.mu.Lock()
				if _, err := s.cycleLocked(&req); err != nil {
					b.Fatal(err)
				}
				s.mu.Unlock()
			}
			// CPU time per decision: unlike ns/op, not inflated when other
			// processes share the cores.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// instantConn finishes every task of a batch at once, on the caller's
// goroutine: a worker link of zero cost, so a benchmark sees Dispatch's own.
type instantConn struct{}

func (instantConn) Start(b *task.Batch, onEvent func(task.Event), onEnd func(error)) {
	for i := range b.Tasks {
		onEvent(task.Event{Index: i, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 1}})
	}
	onEnd(nil)
}

func (instantConn) Run(context.Context, *task.Batch, func(task.Event)) error { return nil }
func (instantConn) Cancel(context.Context, string, int) error                { return nil }

// BenchmarkDispatchObs is one whole Dispatch (admission, cycle, batcher,
// events) with observability off (Deps.Obs nil), with metrics on, and
// with tracing on; compare allocs/op: off must equal the scheduler alone.
func BenchmarkDispatchObs(b *testing.B) {
	tracing, stopT, err := obs.Setup(context.Background(), obs.Config{Prometheus: true}, obs.WithSpanExporter(tracetest.NewNoopExporter()))
	if err != nil {
		b.Fatal(err)
	}
	defer stopT(context.Background()) //nolint:errcheck // no-op exporter
	metrics, stopM, err := obs.Setup(context.Background(), obs.Config{Prometheus: true})
	if err != nil {
		b.Fatal(err)
	}
	defer stopM(context.Background()) //nolint:errcheck // nothing to flush
	for _, bc := range []struct {
		name string
		p    *obs.Provider
	}{{"off", nil}, {"metrics", metrics}, {"tracing", tracing}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{Policy: PolicyLeastRequest}, Deps{Clock: clock.NewFake(t0), Obs: bc.p,
				DialWorker: func(*task.Registered) Conn { return instantConn{} }})
			if err != nil {
				b.Fatal(err)
			}
			for i := range 4 {
				id := fmt.Sprintf("w%d", i)
				s.Upsert(&task.Registered{WorkerID: id, URL: "http://" + id, MaxConcurrency: 64,
					Models: []task.ModelVersion{{Name: testModel, Digest: testDigest}}})
			}
			tk := chat("bench")
			onEvent := func(task.Event) error { return nil }
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Dispatch(ctx, tk, onEvent); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
