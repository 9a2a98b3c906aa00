package obs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func metricsProvider(t testing.TB) *Provider {
	t.Helper()
	p, shutdown, err := Setup(context.Background(), Config{ServiceName: "test", Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	return p
}

// exposed lists every Prometheus series name Tollgate exports (the names
// the Grafana dashboard queries) with a sample that must be present and
// its expected value after the traffic in TestPrometheusScrape.
var exposed = []struct{ sample, value string }{
	{`http_server_request_duration_seconds_count{gen_ai_request_model="llama3-8b",http_request_method="POST",http_response_status_code="200",http_route="/v1/chat/completions"}`, "2"},
	{`http_server_request_duration_seconds_bucket{gen_ai_request_model="llama3-8b",http_request_method="POST",http_response_status_code="200",http_route="/v1/chat/completions",le="0.5"}`, "1"},
	{`tollgate_http_server_requests_total{http_request_method="GET",http_response_status_code="404",http_route="unknown"}`, "1"},
	{`gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b"}`, "2"},
	{`gen_ai_server_request_duration_seconds_count{error_type="timeout",gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b"}`, "1"},
	{`gen_ai_server_time_to_first_token_seconds_sum{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b"}`, "0.3"},
	{`gen_ai_server_time_per_output_token_seconds_count{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b"}`, "2"},
	{`gen_ai_server_time_per_output_token_seconds_sum{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b"}`, "0.03"},
	{`gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b",gen_ai_token_type="input"}`, "30"},
	{`gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_request_model="llama3-8b",gen_ai_token_type="output"}`, "112"},
	{`gen_ai_client_token_usage_sum{gen_ai_operation_name="embeddings",gen_ai_request_model="embed-small",gen_ai_token_type="input"}`, "8"},
	{`tollgate_scheduler_queue_length`, "3"},
	{`tollgate_scheduler_in_flight`, "5"},
	{`tollgate_scheduler_queue_wait_seconds_count`, "1"},
	{`tollgate_scheduler_decision_duration_seconds_count`, "1"},
	{`tollgate_batch_size_sum`, "4"},
	{`tollgate_workers{state="healthy"}`, "2"},
	{`tollgate_workers{state="unhealthy"}`, "1"},
	{`tollgate_receipts{status="pending"}`, "7"},
	{`tollgate_receipts{status="proven"}`, "40"},
	{`tollgate_receipts{status="failed"}`, "1"},
	{`tollgate_receipts_oldest_pending_age_seconds`, "90"},
	{`tollgate_receipts_proving_duration_seconds_count{outcome="ok"}`, "1"},
	{`tollgate_receipts_proving_duration_seconds_count{outcome="error"}`, "1"},
	{`tollgate_ledger_write_duration_seconds_count{outcome="ok"}`, "1"},
}

func recordTraffic(ctx context.Context, m *Metrics) {
	m.ObserveQueue(func() QueueCounts { return QueueCounts{Queued: 3, InFlight: 5} })
	m.ObserveWorkers(func() WorkerCounts { return WorkerCounts{Healthy: 2, Unhealthy: 1} })
	m.ObserveReceipts(func(context.Context) (ReceiptCounts, error) {
		return ReceiptCounts{Pending: 7, Proven: 40, Failed: 1}, nil
	})
	m.ObserveBacklog(func(context.Context) (time.Duration, error) { return 90 * time.Second, nil })
	m.RecordRequest(ctx, "POST", "/v1/chat/completions", "llama3-8b", 200, 400*time.Millisecond)
	m.RecordRequest(ctx, "POST", "/v1/chat/completions", "llama3-8b", 200, 1200*time.Millisecond)
	m.RecordRequest(ctx, "GET", "unknown", "", 404, time.Millisecond)
	// 100ms to first token, then 10 more tokens in 100ms: 10ms per token.
	m.RecordGeneration(ctx, Generation{Operation: OpChat, Model: "llama3-8b", Duration: 200 * time.Millisecond, TimeToFirstToken: 100 * time.Millisecond, InputTokens: 10, OutputTokens: 11})
	// 200ms to first token, then 100 more in 2s: 20ms per token.
	m.RecordGeneration(ctx, Generation{Operation: OpChat, Model: "llama3-8b", Duration: 2200 * time.Millisecond, TimeToFirstToken: 200 * time.Millisecond, InputTokens: 20, OutputTokens: 101})
	m.RecordGeneration(ctx, Generation{Operation: OpChat, Model: "llama3-8b", ErrorType: "timeout", Duration: 10 * time.Second})
	m.RecordGeneration(ctx, Generation{Operation: OpEmbeddings, Model: "embed-small", Duration: 5 * time.Millisecond, InputTokens: 8})
	m.RecordQueueWait(ctx, 3*time.Millisecond)
	m.RecordDecision(ctx, 12*time.Microsecond)
	m.RecordBatchSize(ctx, 4)
	m.RecordProving(ctx, 3*time.Second, true)
	m.RecordProving(ctx, time.Second, false)
	m.RecordLedgerWrite(ctx, 2*time.Millisecond, true)
}

func TestPrometheusScrape(t *testing.T) {
	p := metricsProvider(t)
	recordTraffic(context.Background(), p.Metrics())

	srv := httptest.NewServer(p.MetricsHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	samples := parseExposition(t, string(body))
	for _, e := range exposed {
		got, ok := samples[e.sample]
		if !ok {
			t.Errorf("scrape lacks %s", e.sample)
			continue
		}
		want, _ := strconv.ParseFloat(e.value, 64)
		if diff := got - want; diff > 1e-9 || diff < -1e-9 {
			t.Errorf("%s = %v, want %v", e.sample, got, want)
		}
	}
	if t.Failed() || testing.Verbose() {
		names := map[string]bool{}
		for k := range samples {
			names[strings.SplitN(k, "{", 2)[0]] = true
		}
		var sorted []string
		for n := range names {
			sorted = append(sorted, n)
		}
		sort.Strings(sorted)
		t.Logf("exposed series: %s", strings.Join(sorted, "\n"))
	}

	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "gen_ai_server_time_to_first_token_seconds_bucket") {
		t.Error("WriteMetrics lacks the TTFT histogram")
	}

	// fasthttp: the gateway mounts FasthttpMetricsHandler on /metrics.
	var rc fasthttp.RequestCtx
	rc.Request.SetRequestURI("/metrics")
	p.FasthttpMetricsHandler()(&rc)
	if rc.Response.StatusCode() != 200 || !bytes.Contains(rc.Response.Body(), []byte("tollgate_workers")) {
		t.Errorf("fasthttp /metrics: status %d, body lacks tollgate_workers", rc.Response.StatusCode())
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// parseExposition maps each sample (name plus labels, without the
// otel_scope labels) to its value.
func parseExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsable exposition line %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

func TestMetricsOff(t *testing.T) {
	p, shutdown, err := Setup(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck
	if p.Metrics().Enabled() {
		t.Fatal("metrics on without Prometheus")
	}
	recordTraffic(context.Background(), p.Metrics()) // must not panic
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/metrics with Prometheus off: %d, want 404", rec.Code)
	}
	var nilP *Provider
	nilP.Metrics().RecordRequest(context.Background(), "GET", "/", "", 200, time.Second)
}

func TestReceiptsCallbackError(t *testing.T) {
	var logs bytes.Buffer
	p, shutdown, err := Setup(context.Background(), Config{Prometheus: true}, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck
	p.Metrics().ObserveReceipts(func(context.Context) (ReceiptCounts, error) {
		return ReceiptCounts{}, errors.New("store closed")
	})
	p.Metrics().ObserveWorkers(func() WorkerCounts { return WorkerCounts{Healthy: 1} })
	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `tollgate_workers{state="healthy"} 1`) {
		t.Errorf("a failing receipts callback hid the other gauges:\n%s", buf.String())
	}
	if !strings.Contains(logs.String(), "store closed") {
		t.Errorf("callback error not logged through WithLogger: %q", logs.String())
	}
}

func TestModelCardinalityCap(t *testing.T) {
	p := metricsProvider(t)
	ctx := context.Background()
	for i := range maxSeries + 10 {
		p.Metrics().RecordRequest(ctx, "POST", "/v1/chat/completions", fmt.Sprintf("model-%d", i), 404, time.Millisecond)
	}
	p.Metrics().RecordRequest(ctx, "BREW", "/v1/chat/completions", "model-0", 405, time.Millisecond)
	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	if !strings.Contains(text, `tollgate_http_server_requests_total{gen_ai_request_model="_other",http_request_method="POST",http_response_status_code="404",http_route="/v1/chat/completions"} 10`) {
		t.Error("series past the cap were not folded into model=\"_other\"")
	}
	if !strings.Contains(text, `http_request_method="_OTHER"`) {
		t.Error("unknown method not folded into _OTHER")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero", Config{}, ""},
		{"http url", Config{OTLPEndpoint: "http://collector:4318", OTLPProtocol: "http", SampleRatio: 0.1}, ""},
		{"host port", Config{OTLPEndpoint: "collector:4318", OTLPInsecure: true}, ""},
		{"grpc", Config{OTLPEndpoint: "collector:4317", OTLPProtocol: "grpc"}, "otlp_protocol"},
		{"unknown protocol", Config{OTLPProtocol: "thrift"}, "otlp_protocol"},
		{"ratio high", Config{SampleRatio: 1.5}, "sample_ratio"},
		{"ratio negative", Config{SampleRatio: -0.1}, "sample_ratio"},
		{"bad scheme", Config{OTLPEndpoint: "ftp://x"}, "otlp_endpoint"},
		{"path without scheme", Config{OTLPEndpoint: "collector:4318/v1/traces"}, "otlp_endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want error naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestSetupWithOTLPEndpoint(t *testing.T) {
	// Exporting is lazy: Setup must succeed without a collector, and
	// shutdown must return (the batch holds no spans).
	p, shutdown, err := Setup(context.Background(), Config{OTLPEndpoint: "127.0.0.1:1", OTLPInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Tracing() {
		t.Error("tracing off with an OTLP endpoint")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// hotPath is what the gateway does per streamed chat request: the server
// span and per-request state, the dispatch span, the task's traceparent, the
// worker-link headers, first token, usage, and the metrics at the end.
func hotPath(p *Provider, h *fasthttp.RequestHeader, link http.Header, start time.Time) {
	req := p.StartRequest(context.Background(), h, RouteOf("/v1/chat/completions"), start)
	req.SetOperation(OpChat, "llama3-8b", "req_01")
	ctx := req.Context(context.Background())
	dctx, dspan := p.Start(ctx, "scheduler.dispatch", KindInternal)
	_ = Traceparent(dctx)
	InjectHTTP(dctx, link)
	dspan.SetWorker("w1")
	dspan.End()
	req.FirstToken(start.Add(200 * time.Millisecond))
	req.SetUsage(20, 101)
	req.End(200, "", start.Add(2200*time.Millisecond))
}

func benchHotPath(b *testing.B, cfg Config, opts ...Option) {
	p, shutdown, err := Setup(context.Background(), cfg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck
	var h fasthttp.RequestHeader
	h.SetMethod("POST")
	h.Set("traceparent", clientTraceparent)
	link := http.Header{}
	b.ReportAllocs()
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	for b.Loop() {
		hotPath(p, &h, link, start)
	}
}

// BenchmarkHotPathOff is the per-request cost with tracing and metrics off
// (the default). Target: < 2 µs, 0 allocs/op.
func BenchmarkHotPathOff(b *testing.B) { benchHotPath(b, Config{}) }

// BenchmarkHotPathMetricsOn has tracing off and the Prometheus metrics on.
func BenchmarkHotPathMetricsOn(b *testing.B) { benchHotPath(b, Config{Prometheus: true}) }

// BenchmarkHotPathTracingOn records every span (to a discarding exporter).
func BenchmarkHotPathTracingOn(b *testing.B) {
	benchHotPath(b, Config{Prometheus: true}, WithSpanExporter(discardExporter{}))
}

type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	recordTraffic(context.Background(), m) // a nil *Metrics is off, not a panic
	if m.Enabled() {
		t.Error("nil Metrics enabled")
	}
}

// The Go runtime and process collectors every Prometheus Go target has:
// an operator watching for a goroutine or fd leak has no series without them.
func TestRuntimeAndProcessMetrics(t *testing.T) {
	p := metricsProvider(t)
	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	samples := parseExposition(t, buf.String())
	for _, name := range []string{"go_goroutines", "go_threads", "go_memstats_heap_inuse_bytes", "go_gc_gogc_percent",
		"process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"} {
		if v, ok := samples[name]; !ok {
			t.Errorf("scrape lacks %s", name)
		} else if name == "go_goroutines" && v < 1 {
			t.Errorf("go_goroutines = %v", v)
		}
	}
}
