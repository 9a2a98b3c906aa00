package llama

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// BenchmarkSingleSequence is run.c's loop: one sequence, greedy, 256
// positions from BOS, straight on the model (no engine scheduling).
func BenchmarkSingleSequence(b *testing.B) {
	e := openTestEngine(b, Options{})
	m := e.model
	const steps = 256
	ws := m.newWorkspace(1, 1, 1)
	kv := m.newKVCache(steps)
	smp := newSampler(m.cfg.VocabSize, 0, 0, 1)
	rows := []row{{kv: kv, logits: true}}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime(b)
	tokens := 0
	for b.Loop() {
		tok := tokenBOS
		for pos := 0; pos < steps; pos++ {
			rows[0].token, rows[0].pos = tok, pos
			m.forward(ws, rows)
			tok = smp.sample(ws.logits[:m.cfg.VocabSize])
			tokens++
		}
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tok/s")
	b.ReportMetric(float64(tokens)/(cpuTime(b)-cpu).Seconds(), "tok/cpu-s")
}

// cpuTime is the process's user+system CPU time. On a shared machine
// tokens per CPU-second is steadier than tokens per wall-clock second.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBatched runs n concurrent requests of 256 tokens each through
// the engine (continuous batching, sampling at temperature 0.8 with a seed
// per request) and reports the total generated tokens per second.
func BenchmarkBatched(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			e := openTestEngine(b, Options{MaxNumSeqs: n})
			b.ReportAllocs()
			var tokens atomic.Int64
			iter := int64(0)
			cpu := cpuTime(b)
			for b.Loop() {
				var wg sync.WaitGroup
				for i := range n {
					seed := iter*int64(n) + int64(i)
					wg.Go(func() {
						res, err := e.Generate(b.Context(), &task.Task{Kind: task.KindCompletion, MaxTokens: 256,
							Temperature: 0.8, Seed: &seed}, func(task.Delta) error { return nil })
						if err != nil {
							b.Error(err)
						}
						tokens.Add(int64(res.CompletionTokens))
					})
				}
				wg.Wait()
				iter++
			}
			b.ReportMetric(float64(tokens.Load())/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(float64(tokens.Load())/(cpuTime(b)-cpu).Seconds(), "tok/cpu-s")
		})
	}
}

// BenchmarkForward times one batched decode step of b rows, each a
// different sequence at position 128 (attention over 129 positions), with
// one goroutine and with GOMAXPROCS; tok/s counts rows per second.
func BenchmarkForward(b *testing.B) {
	e := openTestEngine(b, Options{})
	m := e.model
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		for _, n := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("threads=%d/batch=%d", threads, n), func(b *testing.B) {
				ws := m.newWorkspace(n, n, threads)
				defer ws.close()
				rows := make([]row, n)
				for i := range rows {
					rows[i] = row{token: 300 + i, pos: 128, kv: m.newKVCache(129), logits: true}
				}
				b.ReportAllocs()
				cpu := cpuTime(b)
				for b.Loop() {
					m.forward(ws, rows)
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
				b.ReportMetric(float64(n*b.N)/(cpuTime(b)-cpu).Seconds(), "tok/cpu-s")
			})
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e := openTestEngine(b, Options{})
	text := strings.Repeat("Once upon a time, there was a little girl named Lily. ", 8)
	b.ReportAllocs()
	for b.Loop() {
		e.tok.Encode(text, true)
	}
}
