package overhead

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/mockupstream"
	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// hotPath is a gateway on an in-memory listener whose one worker runs the
// simulator engine without delays.
type hotPath struct {
	client *fasthttp.Client
	key    string
	model  string
	stop   func()
}

func startHotPath(b *testing.B) *hotPath {
	b.Helper()
	engine, err := sim.New(sim.Config{Model: Model, NoDelay: true})
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: "bench-worker", Engine: engine, MaxConcurrency: 256, Logger: logger})
	sched, err := scheduler.New(scheduler.Config{}, scheduler.Deps{
		Clock: clock.Real{}, Logger: logger,
		Dial: func(string) scheduler.Conn { return InProcessConn{agent} },
	})
	if err != nil {
		b.Fatal(err)
	}
	sched.Upsert(&task.Registered{WorkerID: "bench-worker", URL: "inprocess://worker", Models: engine.Models(), MaxConcurrency: 256})
	beatCtx, stopBeats := context.WithCancel(context.Background())
	go func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			_ = sched.Heartbeat(&task.Heartbeat{WorkerID: "bench-worker", Time: time.Now(), InFlight: agent.InFlight()})
			select {
			case <-beatCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	const key = "tg-bench-hot-path"
	gw, err := gateway.New(gateway.Config{APIKeys: []gateway.APIKey{{ID: "bench", Key: key}}},
		gateway.Deps{Dispatcher: sched, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { defer close(done); _ = gw.Serve(ln) }()
	return &hotPath{
		client: &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, StreamResponseBody: true},
		key:    key,
		model:  Model,
		stop: func() {
			_ = gw.Shutdown(context.Background())
			<-done
			stopBeats()
			_ = agent.Close()
		},
	}
}

// BenchmarkGatewayHotPath is one chat request through the gateway, the
// scheduler, the batcher and the worker agent, with an engine that answers
// at once (16 tokens): the CPU (cpu-ns/op) and allocations Tollgate spends
// per request, without network or upstream. The client's share is included
// (fasthttp, small).
func BenchmarkGatewayHotPath(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"stream", true}} {
		b.Run(tc.name, func(b *testing.B) {
			hp := startHotPath(b)
			defer hp.stop()
			benchRequests(b, hp.client, "http://tollgate/v1", hp.key, tc.stream)
		})
	}
}

// benchRequests sends chat requests one after another for b.N iterations.
func benchRequests(b *testing.B, client *fasthttp.Client, baseURL, key string, stream bool) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI(baseURL + "/chat/completions")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.SetBodyRaw(RequestBody(stream))
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	br := bufio.NewReaderSize(nil, 16<<10)
	b.ReportAllocs()
	cpu0, err := processCPU()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		n++
		if err := client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
		}
		if stream {
			br.Reset(resp.BodyStream())
			if !drainSSE(br) {
				b.Fatal("stream ended without data: [DONE]")
			}
		} else if s := resp.BodyStream(); s != nil {
			_, _ = io.Copy(io.Discard, s)
		}
		_ = resp.CloseBodyStream()
	}
	cpu1, err := processCPU()
	if err != nil {
		b.Fatal(err)
	}
	// Process CPU (user+system, every goroutine) per request: unlike ns/op
	// it does not count waiting, and it does count work on other threads.
	b.ReportMetric(float64(cpu1-cpu0)/float64(n), "cpu-ns/op")
}

func drainSSE(br *bufio.Reader) bool {
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, []byte("data: [DONE]")) {
			_, _ = io.Copy(io.Discard, br)
			return true
		}
		if err != nil && err != bufio.ErrBufferFull {
			return false
		}
	}
}

// BenchmarkStackLoopback is one chat request through the whole production
// path over loopback sockets: gateway, scheduler, worker link (net/http,
// NDJSON), agent, OpenAI-upstream engine, and a mock upstream answering at
// once. It includes the mock's and the client's CPU. Sub-benchmarks: the
// inbound link (the gateway dials the worker over HTTP), the outbound link
// (TLS + yamux, the worker dialled in), and the inbound link with receipts
// on as shipped (write-ahead ledger and worker records, fsync'd, in a
// temporary directory).
func BenchmarkStackLoopback(b *testing.B) {
	up, err := mockupstream.Start(mockupstream.Config{Models: []string{Model}})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	for _, link := range []struct {
		name               string
		outbound, receipts bool
	}{{"inbound", false, false}, {"outbound", true, false}, {"inbound-receipts", false, true}} {
		b.Run(link.name, func(b *testing.B) {
			st, err := StartStack(context.Background(), StackConfig{UpstreamURL: up.URL, Model: Model, OutboundLink: link.outbound,
				Receipts: link.receipts, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close(context.Background())
			for _, tc := range []struct {
				name   string
				stream bool
			}{{"json", false}, {"stream", true}} {
				b.Run(tc.name, func(b *testing.B) {
					benchRequests(b, &fasthttp.Client{StreamResponseBody: true}, st.URL, st.APIKey, tc.stream)
				})
			}
		})
	}
}
