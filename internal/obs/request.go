package obs

import (
	"context"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Request follows one client request through the gateway, from the
// fasthttp handler's start to its last byte (for a stream, the end of the
// body writer): its server span, and at End its HTTP and GenAI metrics.
// Keep it by value in the per-request state the gateway already has; it
// holds no context and allocates nothing with tracing off.
type Request struct {
	m      *Metrics
	recent *Recent
	span   Span
	start  time.Time

	method, route       string
	op, model           string
	ttft                time.Duration
	inTokens, outTokens int
	ended               bool
}

// StartRequest starts observing one request: it continues the client's W3C
// trace context from h and starts the server span. route is the route
// template (see RouteOf); now is the gateway clock's time.
func (p *Provider) StartRequest(ctx context.Context, h *fasthttp.RequestHeader, route string, now time.Time) Request {
	_, span := p.StartFasthttp(ctx, h, route)
	return Request{m: p.Metrics(), recent: p.Recent(), span: span, start: now, method: methodLabel(h.Method()), route: route}
}

// Context returns parent carrying the request's span, so that the
// dispatch, the worker link and the ledger write join the request's trace
// (and logs get its trace_id). With tracing off it returns parent.
func (r *Request) Context(parent context.Context) context.Context {
	if r.span.s == nil {
		return parent
	}
	return trace.ContextWithSpan(parent, r.span.s)
}

// Span returns the request's server span.
func (r *Request) Span() Span { return r.span }

// SetOperation names the GenAI operation (OpChat, …), the model and the
// request ID once the body is parsed. Without it End records only the HTTP
// metrics.
func (r *Request) SetOperation(op, model, requestID string) {
	r.op, r.model = op, model
	r.span.SetRequest(requestID, op, model)
}

// FirstToken marks the first generated text; later calls are ignored.
func (r *Request) FirstToken(now time.Time) {
	if r.ttft == 0 {
		r.ttft = max(now.Sub(r.start), time.Nanosecond)
		r.span.Event("first_token")
	}
}

// SetUsage records the token usage from the task's EventDone.
func (r *Request) SetUsage(inputTokens, outputTokens int) {
	r.inTokens, r.outTokens = inputTokens, outputTokens
	r.span.SetUsage(inputTokens, outputTokens)
}

// End ends the span and records the metrics: status is the HTTP status
// sent (200 for a stream that failed after its headers), errType the
// apierr code when the request failed ("" on success). Only the first call
// counts.
func (r *Request) End(status int, errType string, now time.Time) {
	if r.ended {
		return
	}
	r.ended = true
	d := now.Sub(r.start)
	ctx := r.Context(context.Background())
	r.m.RecordRequest(ctx, r.method, r.route, r.model, status, d)
	if r.op != "" {
		r.m.RecordGeneration(ctx, Generation{Operation: r.op, Model: r.model, ErrorType: errType, Duration: d,
			TimeToFirstToken: r.ttft, InputTokens: r.inTokens, OutputTokens: r.outTokens})
		r.recent.Observe(now, d, r.ttft, errType != "")
	}
	r.span.SetStatusCode(status)
	if errType != "" {
		r.span.SetString("error.type", errType)
	}
	r.span.End()
}

// EndErr is End for a handler's result: 200 and no error type when err is
// nil, else err's apierr status and code (its type when it has no code).
func (r *Request) EndErr(err error, now time.Time) {
	if err == nil {
		r.End(200, "", now)
		return
	}
	ae := apierr.From(err)
	errType := ae.Code
	if errType == "" {
		errType = ae.Type
	}
	r.End(ae.Status, errType, now)
}

// Detach hands the request over to whoever finishes it (the inference
// that outlives the handler as a stream): it returns a copy to end later
// and makes End on r a no-op, so the handler can end r unconditionally.
func (r *Request) Detach() Request {
	c := *r
	r.ended = true
	return c
}

// RouteOf maps a gateway request path to its route template, the bounded
// value metrics and spans are labelled with.
func RouteOf(path string) string {
	switch path {
	case "/", "/healthz", "/readyz", "/metrics",
		"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models",
		"/v1/workers", "/v1/admin/models", "/v1/receipts",
		"/v1/workers/challenge", "/v1/workers/register", "/v1/workers/heartbeat", "/v1/workers/deregister":
		return path
	}
	for _, prefix := range []string{"/v1/models/", "/v1/receipts/", "/v1/zk/keys/", "/v1/responses/"} {
		if strings.HasPrefix(path, prefix) && len(path) > len(prefix) {
			return prefix + "{id}"
		}
	}
	return "unknown"
}

// methodLabel is normalMethod without converting the bytes.
func methodLabel(b []byte) string {
	switch string(b) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "HEAD":
		return "HEAD"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return "_OTHER"
}
