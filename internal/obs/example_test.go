package obs_test

import (
	"context"
	"os"
	"time"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/valyala/fasthttp"
)

// The gateway's per-request pattern: start at the fasthttp boundary, hand
// the request's context to the dispatch, mark the first token and usage,
// end with the handler's result.
func Example() {
	prov, shutdown, err := obs.Setup(context.Background(), obs.Config{ServiceName: "tollgate-gateway", Prometheus: true})
	if err != nil {
		panic(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck

	var h fasthttp.RequestHeader // rc.Request.Header in the handler
	h.SetMethod("POST")
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC) // s.clock.Now()

	req := prov.StartRequest(context.Background(), &h, obs.RouteOf("/v1/chat/completions"), start)
	req.SetOperation(obs.OpChat, "llama3-8b", "req_1")
	ctx := req.Context(context.Background()) // give this to Dispatch and Ledger.Record
	_ = obs.Traceparent(ctx)                 // "" with tracing off
	req.FirstToken(start.Add(80 * time.Millisecond))
	req.SetUsage(12, 40)
	req.EndErr(nil, start.Add(900*time.Millisecond))

	_ = prov.WriteMetrics(os.Stdout) // what GET /metrics serves
}
