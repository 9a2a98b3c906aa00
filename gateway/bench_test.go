package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkHandleChat is the gateway's own cost for one non-streamed chat
// request (auth, parse, validate, task, dispatch to an in-memory fake,
// response JSON), without the network: fasthttp's handler is called on an
// in-memory RequestCtx. The obs variants price observability: "off" is a
// nil provider (the default), "metrics" Prometheus with tracing off,
// "traced" every span recorded and dropped by a no-op exporter.
func BenchmarkHandleChat(b *testing.B) {
	for _, tc := range []struct {
		name string
		body string
	}{
		{"json", `{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Tell me a story about a cat"}],"max_tokens":16,"temperature":0.7}`},
		{"error", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":9}`},
	} {
		for _, mode := range []string{"off", "metrics", "traced"} {
			b.Run(tc.name+"/obs="+mode, func(b *testing.B) {
				p := benchObs(b, mode)
				h := newHarness(b, func(c *Config, d *Deps) { d.Ledger = nil; d.Obs = p })
				var rc fasthttp.RequestCtx
				b.ReportAllocs()
				for b.Loop() {
					rc.Request.Reset()
					rc.Response.Reset()
					rc.Request.Header.SetMethod("POST")
					rc.Request.SetRequestURI("/v1/chat/completions")
					rc.Request.Header.Set("Authorization", "Bearer "+testKey)
					rc.Request.SetBodyString(tc.body)
					h.srv.handle(&rc)
				}
				if rc.Response.StatusCode() != 200 && tc.name == "json" {
					b.Fatalf("status %d: %s", rc.Response.StatusCode(), rc.Response.Body())
				}
			})
		}
	}
}

// benchObs builds the provider for one observability mode (nil for "off").
func benchObs(b *testing.B, mode string) *obs.Provider {
	if mode == "off" {
		return nil
	}
	var opts []obs.Option
	if mode == "traced" {
		opts = append(opts, obs.WithSpanExporter(tracetest.NewNoopExporter()))
	}
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{Prometheus: true}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = shutdown(context.Background()) })
	return p
}

// BenchmarkRequestObservation isolates what the gateway adds per request
// for observability (the calls handle, run and unary make, in order), so
// its cost is visible apart from the much larger request handling.
func BenchmarkRequestObservation(b *testing.B) {
	for _, mode := range []string{"off", "metrics", "traced"} {
		b.Run("obs="+mode, func(b *testing.B) {
			p := benchObs(b, mode)
			var h fasthttp.RequestHeader
			h.SetMethod("POST")
			h.SetRequestURI("/v1/chat/completions")
			now := time.Unix(1e9, 0)
			b.ReportAllocs()
			for b.Loop() {
				req := p.StartRequest(context.Background(), &h, obs.RouteOf("/v1/chat/completions"), now)
				req.SetOperation(obs.OpChat, "tiny", "req-1")
				ctx := context.Background()
				if p != nil {
					ctx = req.Context(obs.WithRequestID(ctx, "req-1"))
				}
				_ = ctx
				req.FirstToken(now.Add(time.Millisecond))
				req.SetUsage(12, 16)
				req.End(200, "", now.Add(10*time.Millisecond))
			}
		})
	}
}
