package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// overheadRate is the fixed arrival rate of BenchmarkGatewayOverhead.
const overheadRate = 200 // requests per second

// BenchmarkGatewayOverhead measures the latency the front door adds: the
// same open-loop load (overheadRate req/s, b.N requests, one chat task of 8
// tokens on the sim-tiny simulator) is sent once straight to a worker agent
// (Agent.RunBatch, no HTTP) and once through `tollgate dev` (HTTP client →
// fasthttp gateway → scheduler → batcher → gateway↔worker HTTP link →
// agent). Latency counts from each request's scheduled send time. It
// reports p50/p99 of both and the added p50/p99 (through − direct at the
// same quantile). With receipts on, each request also waits for its
// fsync'd ledger write. Run: make bench.
func BenchmarkGatewayOverhead(b *testing.B) {
	for _, receipts := range []bool{false, true} {
		b.Run(fmt.Sprintf("receipts=%v", receipts), func(b *testing.B) { benchOverhead(b, receipts) })
	}
}

func benchOverhead(b *testing.B, receipts bool) {
	const body = `{"model":"sim-tiny","messages":[{"role":"user","content":"Tell me a short story about a cat"}],"max_tokens":8,"temperature":0}`
	newEngine := func() task.Engine {
		e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}

	// Direct: the worker's agent on its own engine.
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: "0x01", Engine: newEngine()})
	defer agent.Close()
	direct := func(i int) error {
		tk := task.Task{RequestID: fmt.Sprintf("direct-%d", i), Kind: task.KindChat, Model: "sim-tiny",
			Messages: []task.Message{{Role: "user", Content: "Tell me a short story about a cat"}}, MaxTokens: 8, TopP: 1}
		var failed error
		err := agent.RunBatch(context.Background(), &task.Batch{ID: tk.RequestID, Tasks: []task.Task{tk}}, func(ev task.Event) error {
			if ev.Type == task.EventFailed {
				failed = ev.Error.APIError()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return failed
	}

	// Through: a full dev stack.
	d := startBenchDev(b, receipts)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	url := d.URL() + "/v1/chat/completions"
	through := func(int) error {
		_, err := postChat(client, url, body)
		return err
	}

	b.ReportAllocs()
	b.ResetTimer()
	dl := openLoop(b, b.N, direct)
	tl := openLoop(b, b.N, through)
	b.StopTimer()
	dp50, dp99 := quantile(dl, 0.50), quantile(dl, 0.99)
	tp50, tp99 := quantile(tl, 0.50), quantile(tl, 0.99)
	b.ReportMetric(ms(dp50), "direct-p50-ms")
	b.ReportMetric(ms(dp99), "direct-p99-ms")
	b.ReportMetric(ms(tp50), "gateway-p50-ms")
	b.ReportMetric(ms(tp99), "gateway-p99-ms")
	b.ReportMetric(ms(tp50-dp50), "added-p50-ms")
	b.ReportMetric(ms(tp99-dp99), "added-p99-ms")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func quantile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// openLoop sends n requests at overheadRate regardless of how fast they
// finish and returns each one's latency from its scheduled start.
func openLoop(b *testing.B, n int, do func(i int) error) []time.Duration {
	interval := time.Second / overheadRate
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := do(i)
			lat[i] = time.Since(at)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return lat
}

func startBenchDev(b *testing.B, receipts bool) *devStack {
	b.Helper()
	d, err := startDevForBench(b.TempDir(), receipts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.stop() })
	return d
}
