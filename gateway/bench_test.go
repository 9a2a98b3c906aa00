package gateway

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkHandleChat is the gateway's own cost for one non-streamed chat
// request (auth, parse, validate, task, dispatch to an in-memory fake,
// response JSON), without the network: fasthttp's handler is called on an
// in-memory RequestCtx.
func BenchmarkHandleChat(b *testing.B) {
	for _, tc := range []struct {
		name string
		body string
	}{
		{"json", `{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Tell me a story about a cat"}],"max_tokens":16,"temperature":0.7}`},
		{"error", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":9}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b, func(c *Config, d *Deps) { d.Ledger = nil })
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
