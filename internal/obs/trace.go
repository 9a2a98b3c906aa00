package obs

import (
	"context"
	"crypto/rand"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// propagator speaks W3C trace context (traceparent, tracestate) only.
var propagator = propagation.TraceContext{}

// Span is a started span, or nothing when tracing is off (the zero Span).
// Every method is safe on the zero value and builds attributes only when
// the span is recording.
type Span struct{ s trace.Span }

// Recording reports whether the span records anything.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// End ends the span.
func (s Span) End() {
	if s.s != nil {
		s.s.End()
	}
}

// SetStatusCode records the HTTP status; 5xx marks the span as an error.
func (s Span) SetStatusCode(status int) {
	if !s.Recording() {
		return
	}
	s.s.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		s.s.SetStatus(codes.Error, strconv.Itoa(status))
	}
}

// SetError records err and marks the span as failed (nil: nothing).
func (s Span) SetError(err error) {
	if err == nil || !s.Recording() {
		return
	}
	s.s.RecordError(err)
	s.s.SetStatus(codes.Error, err.Error())
}

// SetRequest records the request ID and model (GenAI conventions).
func (s Span) SetRequest(requestID, operation, model string) {
	if !s.Recording() {
		return
	}
	s.s.SetAttributes(attribute.String("tollgate.request_id", requestID),
		attribute.String("gen_ai.operation.name", operation),
		attribute.String("gen_ai.request.model", model))
}

// SetWorker records the worker that served.
func (s Span) SetWorker(workerID string) {
	if s.Recording() {
		s.s.SetAttributes(attribute.String("tollgate.worker.id", workerID))
	}
}

// SetUsage records token usage (GenAI conventions).
func (s Span) SetUsage(inputTokens, outputTokens int) {
	if s.Recording() {
		s.s.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", inputTokens),
			attribute.Int("gen_ai.usage.output_tokens", outputTokens))
	}
}

// SetInt records one integer attribute (batch size, leaf count, index).
func (s Span) SetInt(key string, v int) {
	if s.Recording() {
		s.s.SetAttributes(attribute.Int(key, v))
	}
}

// SetString records one string attribute.
func (s Span) SetString(key, v string) {
	if s.Recording() {
		s.s.SetAttributes(attribute.String(key, v))
	}
}

// Event adds a timestamped event (e.g. "first_token").
func (s Span) Event(name string) {
	if s.Recording() {
		s.s.AddEvent(name)
	}
}

// Kind is a span's role.
type Kind int

const (
	KindInternal Kind = iota // work inside a process (scheduling, queueing, engine)
	KindClient               // an outgoing call (gateway→worker, worker→upstream)
	KindServer               // an incoming request
)

func (k Kind) otel() trace.SpanKind {
	switch k {
	case KindClient:
		return trace.SpanKindClient
	case KindServer:
		return trace.SpanKindServer
	}
	return trace.SpanKindInternal
}

// Start starts a child of the span in ctx. With tracing off it returns ctx
// unchanged and the zero Span, allocating nothing.
func (p *Provider) Start(ctx context.Context, name string, kind Kind) (context.Context, Span) {
	if !p.Tracing() {
		return ctx, Span{}
	}
	ctx, sp := p.tracer.Start(ctx, name, trace.WithSpanKind(kind.otel()))
	return ctx, Span{sp}
}

// StartFasthttp starts the server span of one client request at the
// gateway's fasthttp boundary, continuing the client's W3C trace context
// when it sent one. route is the route template, never the raw path.
func (p *Provider) StartFasthttp(ctx context.Context, h *fasthttp.RequestHeader, route string) (context.Context, Span) {
	if !p.Tracing() {
		return ctx, Span{}
	}
	ctx = propagator.Extract(ctx, FasthttpCarrier{h})
	method := string(h.Method())
	ctx, sp := p.tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", normalMethod(method)), attribute.String("http.route", route)))
	return ctx, Span{sp}
}

// StartHTTP starts a server span for a net/http request (the worker's
// batch endpoint), continuing the caller's trace context.
func (p *Provider) StartHTTP(ctx context.Context, r *http.Request, route string) (context.Context, Span) {
	if !p.Tracing() {
		return ctx, Span{}
	}
	ctx = propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	ctx, sp := p.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", normalMethod(r.Method)), attribute.String("http.route", route)))
	return ctx, Span{sp}
}

// StartFromTraceparent starts a span whose parent is the traceparent string
// (a task's own parent inside a batch); an empty or invalid string parents
// it on ctx's span instead.
func (p *Provider) StartFromTraceparent(ctx context.Context, traceparent, name string, kind Kind) (context.Context, Span) {
	if !p.Tracing() {
		return ctx, Span{}
	}
	return p.Start(ContextWithTraceparent(ctx, traceparent), name, kind)
}

// StartLinked starts a new root span (its own trace) linked to each of the
// traceparents, skipping empty or invalid ones: the prover's batch span,
// linked to the requests whose receipts it proves.
func (p *Provider) StartLinked(ctx context.Context, name string, traceparents []string) (context.Context, Span) {
	if !p.Tracing() {
		return ctx, Span{}
	}
	links := make([]trace.Link, 0, len(traceparents))
	for _, tp := range traceparents {
		if sc := ParseTraceparent(tp); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, sp := p.tracer.Start(ctx, name, trace.WithNewRoot(), trace.WithLinks(links...), trace.WithSpanKind(trace.SpanKindInternal))
	return ctx, Span{sp}
}

// InjectHTTP writes ctx's trace context into outgoing net/http headers
// (gateway→worker batch requests, worker→upstream calls). Nothing is
// written when ctx carries no valid span context.
func InjectHTTP(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// InjectFields writes ctx's W3C trace context (traceparent, tracestate)
// through set, for clients that build their own headers; nothing when ctx
// carries no span.
func InjectFields(ctx context.Context, set func(key, value string)) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagator.Inject(ctx, setCarrier(set))
	}
}

// setCarrier is a write-only propagation.TextMapCarrier.
type setCarrier func(key, value string)

func (setCarrier) Get(string) string   { return "" }
func (f setCarrier) Set(key, v string) { f(key, v) }
func (setCarrier) Keys() []string      { return nil }

// Traceparent returns ctx's span context as a W3C traceparent string, or ""
// when there is none. Put it in task.Task.Traceparent per task, and
// beside each receipt for the prover's links.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	var c traceparentCarrier
	propagator.Inject(trace.ContextWithSpanContext(context.Background(), sc), &c)
	return c.value
}

// ParseTraceparent parses a W3C traceparent string; the result is invalid
// (IsValid false) for anything malformed.
func ParseTraceparent(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	c := traceparentCarrier{value: tp}
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), &c))
}

// ContextWithTraceparent returns ctx with the remote span context of tp as
// its parent; ctx unchanged when tp is empty or malformed.
func ContextWithTraceparent(ctx context.Context, tp string) context.Context {
	sc := ParseTraceparent(tp)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// FreshTraceparent returns a new traceparent with tp's trace flags and
// random trace and span IDs (a trace of the same shape, not linked to
// tp's), or "" when tp is empty or malformed.
func FreshTraceparent(tp string) string {
	sc := ParseTraceparent(tp)
	if !sc.IsValid() {
		return ""
	}
	var cfg trace.SpanContextConfig
	rand.Read(cfg.TraceID[:])
	rand.Read(cfg.SpanID[:])
	cfg.TraceFlags = sc.TraceFlags()
	return Traceparent(trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(cfg)))
}

// traceparentCarrier holds just the traceparent header.
type traceparentCarrier struct{ value string }

func (c *traceparentCarrier) Get(key string) string {
	if key == "traceparent" {
		return c.value
	}
	return ""
}

func (c *traceparentCarrier) Set(key, value string) {
	if key == "traceparent" {
		c.value = value
	}
}

func (c *traceparentCarrier) Keys() []string { return []string{"traceparent"} }

// FasthttpCarrier adapts fasthttp request headers to the OpenTelemetry
// propagation.TextMapCarrier, for extracting (and, in tests, injecting) W3C
// trace context at the gateway.
type FasthttpCarrier struct{ H *fasthttp.RequestHeader }

var _ propagation.TextMapCarrier = FasthttpCarrier{}

// Get returns the header's value ("" if absent).
func (c FasthttpCarrier) Get(key string) string { return string(c.H.Peek(key)) }

// Set sets the header.
func (c FasthttpCarrier) Set(key, value string) { c.H.Set(key, value) }

// Keys lists the header names.
func (c FasthttpCarrier) Keys() []string {
	var keys []string
	for k := range c.H.All() {
		keys = append(keys, string(k))
	}
	return keys
}
