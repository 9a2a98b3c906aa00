package obs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func tracingProvider(t *testing.T) (*Provider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	p, shutdown, err := Setup(context.Background(), Config{ServiceName: "test"}, WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	return p, exp
}

const clientTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestStreamedRequestTrace runs one streamed request the way Tollgate's
// processes hand it on — client → gateway (fasthttp) → worker (net/http,
// NDJSON stream, per-task traceparent in the batch body) → upstream
// (net/http) — then the prover's batch span linked to it, and checks that
// the request is one connected trace continuing the client's.
func TestStreamedRequestTrace(t *testing.T) {
	p, exp := tracingProvider(t)
	ctx := context.Background()

	// Upstream (an OpenAI-compatible server) records the traceparent it got.
	upstreamTP := make(chan string, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamTP <- r.Header.Get("traceparent")
		fmt.Fprint(w, "data: {}\n\ndata: [DONE]\n\n")
	}))
	defer upstream.Close()

	// Worker: batch endpoint; each task continues its own traceparent.
	type task struct {
		RequestID   string `json:"request_id"`
		Traceparent string `json:"traceparent"`
	}
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := p.StartHTTP(r.Context(), r, "/v1/worker/batch")
		defer span.End()
		var batch struct{ Tasks []task }
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			span.SetError(err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		span.SetInt("tollgate.batch.size", len(batch.Tasks))
		for i, tk := range batch.Tasks {
			tctx, tspan := p.StartFromTraceparent(ctx, tk.Traceparent, "engine.generate", KindInternal)
			uctx, uspan := p.Start(tctx, "POST /v1/chat/completions", KindClient)
			req, _ := http.NewRequestWithContext(uctx, http.MethodPost, upstream.URL, nil)
			InjectHTTP(uctx, req.Header)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				uspan.SetError(err)
			} else {
				resp.Body.Close()
				uspan.SetStatusCode(resp.StatusCode)
			}
			uspan.End()
			fmt.Fprintf(w, "{\"i\":%d,\"t\":\"done\"}\n", i)
			w.(http.Flusher).Flush()
			tspan.SetUsage(5, 7)
			tspan.End()
		}
	}))
	defer worker.Close()

	// Gateway: fasthttp front door over an in-memory listener.
	var receiptTP string
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	srv := &fasthttp.Server{Handler: func(rc *fasthttp.RequestCtx) {
		ctx, span := p.StartFasthttp(context.Background(), &rc.Request.Header, "/v1/chat/completions")
		defer span.End()
		span.SetRequest("req_1", OpChat, "llama3-8b")
		dctx, dspan := p.Start(ctx, "scheduler.dispatch", KindInternal)
		body := fmt.Sprintf(`{"id":"b1","tasks":[{"request_id":"req_1","traceparent":%q}]}`, Traceparent(dctx))
		cctx, cspan := p.Start(dctx, "POST /v1/worker/batch", KindClient)
		req, _ := http.NewRequestWithContext(cctx, http.MethodPost, worker.URL, strings.NewReader(body))
		InjectHTTP(cctx, req.Header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cspan.SetError(err)
			rc.Error(err.Error(), fasthttp.StatusBadGateway)
		} else {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				fmt.Fprintf(rc, "data: %s\n\n", sc.Text())
			}
			resp.Body.Close()
			cspan.SetStatusCode(resp.StatusCode)
		}
		cspan.End()
		dspan.End()
		receiptTP = Traceparent(ctx) // stored beside the receipt
		span.SetStatusCode(fasthttp.StatusOK)
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with ln.Close
	defer srv.Shutdown()

	client := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() }}}
	req, _ := http.NewRequest(http.MethodPost, "http://gateway/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("traceparent", clientTraceparent)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	streamed := new(strings.Builder)
	_, _ = bufio.NewReader(resp.Body).WriteTo(streamed)
	resp.Body.Close()
	if !strings.Contains(streamed.String(), `"t":"done"`) {
		t.Fatalf("stream = %q, want the worker's done event", streamed)
	}

	// The prover's batch, as its own trace, linked to the request.
	_, pspan := p.StartLinked(ctx, "prover.batch", []string{receiptTP, "", "garbage"})
	pspan.SetInt("tollgate.batch.leaves", 1)
	pspan.End()

	spans := exp.GetSpans()
	clientSC := ParseTraceparent(clientTraceparent)
	gw := spanNamed(t, spans, "POST /v1/chat/completions", trace.SpanKindServer)
	if gw.Parent.SpanID() != clientSC.SpanID() || !gw.Parent.IsRemote() {
		t.Errorf("gateway span parent = %v, want the client's remote span %v", gw.Parent.SpanID(), clientSC.SpanID())
	}
	type ref struct {
		name string
		kind trace.SpanKind
	}
	wantParent := []struct{ child, parent ref }{
		{ref{"scheduler.dispatch", trace.SpanKindInternal}, ref{"POST /v1/chat/completions", trace.SpanKindServer}},
		{ref{"POST /v1/worker/batch", trace.SpanKindClient}, ref{"scheduler.dispatch", trace.SpanKindInternal}},
		{ref{"POST /v1/worker/batch", trace.SpanKindServer}, ref{"POST /v1/worker/batch", trace.SpanKindClient}},
		// per-task parent from the traceparent in the batch body
		{ref{"engine.generate", trace.SpanKindInternal}, ref{"scheduler.dispatch", trace.SpanKindInternal}},
		{ref{"POST /v1/chat/completions", trace.SpanKindClient}, ref{"engine.generate", trace.SpanKindInternal}},
	}
	for _, w := range wantParent {
		c, parent := spanNamed(t, spans, w.child.name, w.child.kind), spanNamed(t, spans, w.parent.name, w.parent.kind)
		if c.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%v span %q: parent = %v, want %v span %q (%v)", w.child.kind, w.child.name, c.Parent.SpanID(), w.parent.kind, w.parent.name, parent.SpanContext.SpanID())
		}
	}
	upClient := spanNamed(t, spans, "POST /v1/chat/completions", trace.SpanKindClient)
	if got := ParseTraceparent(<-upstreamTP); got.SpanID() != upClient.SpanContext.SpanID() {
		t.Errorf("upstream got parent span %v, want the worker's upstream client span %v", got.SpanID(), upClient.SpanContext.SpanID())
	}
	var prover tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "prover.batch" {
			prover = s
			continue
		}
		if s.SpanContext.TraceID() != clientSC.TraceID() {
			t.Errorf("span %q (%v) is in trace %v, want the client's %v", s.Name, s.SpanKind, s.SpanContext.TraceID(), clientSC.TraceID())
		}
	}
	if prover.SpanContext.TraceID() == clientSC.TraceID() || prover.Parent.IsValid() {
		t.Errorf("prover span should be a new root trace, got trace %v parent %v", prover.SpanContext.TraceID(), prover.Parent)
	}
	if len(prover.Links) != 1 || prover.Links[0].SpanContext.SpanID() != gw.SpanContext.SpanID() || prover.Links[0].SpanContext.TraceID() != clientSC.TraceID() {
		t.Errorf("prover links = %+v, want exactly the gateway request span", prover.Links)
	}
	if len(spans) != 7 {
		for _, s := range spans {
			t.Logf("span %q kind %v", s.Name, s.SpanKind)
		}
		t.Errorf("got %d spans, want 7", len(spans))
	}
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name && s.SpanKind == kind {
			return s
		}
	}
	t.Fatalf("no %v span %q", kind, name)
	return tracetest.SpanStub{}
}

func TestTracingOffIsInert(t *testing.T) {
	p, shutdown, err := Setup(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck
	var h fasthttp.RequestHeader
	h.Set("traceparent", clientTraceparent)
	ctx := context.Background()
	got, span := p.StartFasthttp(ctx, &h, "/v1/chat/completions")
	if got != ctx || span.Recording() {
		t.Error("tracing off: StartFasthttp changed the context or recorded")
	}
	span.SetRequest("r", OpChat, "m")
	span.SetError(fmt.Errorf("x"))
	span.End()
	if Traceparent(got) != "" {
		t.Error("tracing off: Traceparent is not empty")
	}
	hdr := http.Header{}
	InjectHTTP(got, hdr)
	if len(hdr) != 0 {
		t.Errorf("tracing off: injected %v", hdr)
	}
	var nilP *Provider
	if _, s := nilP.Start(ctx, "x", KindInternal); s.Recording() {
		t.Error("nil provider recorded")
	}
}

func TestTraceparent(t *testing.T) {
	tests := []struct {
		name, in string
		valid    bool
	}{
		{"sampled", clientTraceparent, true},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"empty", "", false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"upper case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", false},
		{"short", "00-4bf92f35-00f067aa0ba902b7-01", false},
		{"garbage", "hello", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := ParseTraceparent(tc.in)
			if sc.IsValid() != tc.valid {
				t.Fatalf("ParseTraceparent(%q).IsValid() = %v, want %v", tc.in, sc.IsValid(), tc.valid)
			}
			if !tc.valid {
				return
			}
			if got := Traceparent(trace.ContextWithSpanContext(context.Background(), sc)); got != tc.in {
				t.Errorf("round trip = %q, want %q", got, tc.in)
			}
		})
	}
}

func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{clientTraceparent, "", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "hello", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc := ParseTraceparent(s)
		if !sc.IsValid() {
			if ContextWithTraceparent(context.Background(), s) != context.Background() {
				t.Fatal("invalid traceparent changed the context")
			}
			return
		}
		again := ParseTraceparent(Traceparent(trace.ContextWithSpanContext(context.Background(), sc)))
		if again.TraceID() != sc.TraceID() || again.SpanID() != sc.SpanID() || again.TraceFlags() != sc.TraceFlags() {
			t.Fatalf("round trip of %q changed the span context", s)
		}
	})
}

func TestFasthttpCarrier(t *testing.T) {
	var h fasthttp.RequestHeader
	c := FasthttpCarrier{&h}
	c.Set("traceparent", clientTraceparent)
	c.Set("tracestate", "vendor=1")
	if got := c.Get("Traceparent"); got != clientTraceparent {
		t.Errorf("Get = %q", got)
	}
	keys := strings.Join(c.Keys(), ",")
	if !strings.Contains(strings.ToLower(keys), "traceparent") || !strings.Contains(strings.ToLower(keys), "tracestate") {
		t.Errorf("Keys = %s", keys)
	}
	sc := trace.SpanContextFromContext(propagator.Extract(context.Background(), c))
	if !sc.IsValid() || sc.TraceState().Get("vendor") != "1" {
		t.Errorf("extracted %v, want the traceparent with its tracestate", sc)
	}
}
