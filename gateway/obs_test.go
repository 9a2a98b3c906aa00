package gateway

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/statuspage"
	"github.com/tollgate-ai/tollgate/internal/task"
)

const clientTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestObservedRequests checks the gateway's observability boundary: the
// client's traceparent is continued, the dispatch context carries the
// request's span (so the scheduler and worker join the trace), and
// /metrics (unauthenticated) counts requests by route, model and status.
func TestObservedRequests(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{Prometheus: true}, obs.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	var mu sync.Mutex
	var dispatchTP []string
	logs := &lockedBuffer{}
	h := newHarness(t, func(c *Config, d *Deps) {
		d.Obs = p
		d.Logger = obs.Logger(obs.LogConfig{Format: "json", Level: "debug", Output: logs})
	})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		mu.Lock()
		dispatchTP = append(dispatchTP, obs.Traceparent(ctx))
		mu.Unlock()
		return echoScript(ctx, tk, onEvent)
	}

	for _, tc := range []struct {
		name, path, key, body string
		hdr                   []string
		status                int
	}{
		{"unary chat with client trace", "/v1/chat/completions", testKey, chatOK, []string{"traceparent", clientTraceparent}, 200},
		{"stream", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil, 200},
		{"no key", "/v1/chat/completions", "", chatOK, nil, 401},
		{"unknown model", "/v1/completions", testKey, `{"model":"nope","prompt":"x"}`, nil, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, http.MethodPost, tc.path, tc.key, tc.body, tc.hdr...)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
		})
	}
	// The stream's observation ends in its body writer, after the last
	// byte: shut down (which waits for it) before looking.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	scrape := h.do(t, http.MethodGet, "/metrics", "", "")
	metrics := readAll(t, scrape)
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	client := obs.ParseTraceparent(clientTraceparent)
	var server *tracetest.SpanStub
	all := spans.GetSpans()
	for i := range all {
		if all[i].SpanContext.TraceID() == client.TraceID() {
			server = &all[i]
		}
	}
	if server == nil || server.Name != "POST /v1/chat/completions" || server.Parent.SpanID() != client.SpanID() {
		t.Fatalf("no server span continuing the client's trace; spans: %v", all)
	}
	mu.Lock()
	if len(dispatchTP) == 0 || obs.ParseTraceparent(dispatchTP[0]).SpanID() != server.SpanContext.SpanID() {
		t.Errorf("dispatch context traceparents %v; want the first to be the server span %s", dispatchTP, server.SpanContext.SpanID())
	}
	mu.Unlock()

	// The request's log lines carry its request ID and trace ID.
	var done bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"request done"`) && strings.Contains(line, `"trace_id":"`+client.TraceID().String()+`"`) &&
			strings.Contains(line, `"request_id":"`) {
			done = true
		}
	}
	if !done {
		t.Errorf("no JSON \"request done\" line with request_id and the client's trace_id:\n%s", logs.String())
	}

	if scrape.StatusCode != 200 {
		t.Fatalf("/metrics: %d", scrape.StatusCode)
	}
	for _, want := range []string{
		`http_response_status_code="200",http_route="/v1/chat/completions"`,
		`http_response_status_code="401",http_route="/v1/chat/completions"`,
		`http_response_status_code="404",http_route="/v1/completions"`,
		`gen_ai_server_time_to_first_token_seconds_count{gen_ai_operation_name="chat",gen_ai_request_model="tiny"`,
		`gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_request_model="tiny",gen_ai_token_type="input"`,
		`error_type="model_not_found"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", metrics)
	}
}

// lockedBuffer is a log sink written by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fakeStatus struct{}

func (fakeStatus) StatusWorkers() []statuspage.Worker {
	return []statuspage.Worker{{ID: "0xfeedbeef", URL: "http://10.1.2.3:9090", Healthy: true, MaxConcurrency: 8, InFlight: 3,
		Models: []string{testModel}, GPUs: []task.GPU{{Index: 0, Name: "NVIDIA H100", MemoryTotalMiB: 80000, MemoryUsedMiB: 40000}}}}
}
func (fakeStatus) StatusLoad() statuspage.Load { return statuspage.Load{QueueLength: 2, InFlight: 3} }

type fakeCounts struct{}

func (fakeCounts) ReceiptCounts(context.Context) (statuspage.Receipts, error) {
	return statuspage.Receipts{Pending: 17, Proven: 40}, nil
}

// TestStatusPage checks the page at "/" needs no key, shows workers,
// models and the receipts backlog, and hides worker URLs.
func TestStatusPage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mutate   func(*Config, *Deps)
		want     []string
		wantNot  []string
		wantCode int
	}{
		{"full", func(c *Config, d *Deps) { d.Status, d.Receipts = fakeStatus{}, fakeCounts{} },
			[]string{"0xfeedbeef", "NVIDIA H100", testModel, "17"}, []string{"10.1.2.3"}, 200},
		{"no sources", nil, []string{testModel}, nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.mutate)
			resp := h.do(t, http.MethodGet, "/", "", "")
			page := readAll(t, resp)
			if resp.StatusCode != tc.wantCode || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			for _, w := range tc.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(page, w) {
					t.Errorf("page shows %q", w)
				}
			}
		})
	}
}
