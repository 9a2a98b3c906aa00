package obs

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestRouteOf(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/v1/chat/completions", "/v1/chat/completions"},
		{"/v1/models/llama3-8b", "/v1/models/{id}"},
		{"/v1/receipts/rcpt_abc", "/v1/receipts/{id}"},
		{"/v1/zk/keys/vk1", "/v1/zk/keys/{id}"},
		{"/v1/workers/heartbeat", "/v1/workers/heartbeat"},
		{"/v1/models/", "unknown"},
		{"/wp-admin/setup.php", "unknown"},
		{"/", "/"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if got := RouteOf(tc.path); got != tc.want {
				t.Errorf("RouteOf(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestRequestLifecycle(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, shutdown, err := Setup(context.Background(), Config{Prometheus: true}, WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	var h fasthttp.RequestHeader
	h.SetMethod("POST")
	h.Set("traceparent", clientTraceparent)

	req := p.StartRequest(context.Background(), &h, "/v1/completions", start)
	req.SetOperation(OpTextCompletion, "tiny", "req_9")
	if got := ParseTraceparent(Traceparent(req.Context(context.Background()))); got.TraceID() != ParseTraceparent(clientTraceparent).TraceID() {
		t.Errorf("request context is not in the client's trace")
	}
	req.FirstToken(start.Add(50 * time.Millisecond))
	req.FirstToken(start.Add(90 * time.Millisecond)) // ignored
	req.SetUsage(4, 6)
	req.End(200, "", start.Add(300*time.Millisecond))
	req.End(500, "late", start.Add(time.Second)) // ignored

	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{
		`tollgate_http_server_requests_total{gen_ai_request_model="tiny",http_request_method="POST",http_response_status_code="200",http_route="/v1/completions"} 1`,
		`gen_ai_server_time_to_first_token_seconds_sum{gen_ai_operation_name="text_completion",gen_ai_request_model="tiny"} 0.05`,
		`gen_ai_server_time_per_output_token_seconds_sum{gen_ai_operation_name="text_completion",gen_ai_request_model="tiny"} 0.05`,
		`gen_ai_client_token_usage_sum{gen_ai_operation_name="text_completion",gen_ai_request_model="tiny",gen_ai_token_type="output"} 6`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "POST /v1/completions" || len(spans[0].Events) != 1 {
		t.Fatalf("spans = %+v, want one server span with a first_token event", spans)
	}
}

func TestRequestDetachAndEndErr(t *testing.T) {
	p := metricsProvider(t)
	start := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	var h fasthttp.RequestHeader
	h.SetMethod("POST")

	// The handler detaches a stream and ends its own copy: only the
	// detached copy counts.
	req := p.StartRequest(context.Background(), &h, "/v1/chat/completions", start)
	req.SetOperation(OpChat, "m", "req_1")
	streamed := req.Detach()
	req.End(200, "", start.Add(time.Millisecond))
	streamed.EndErr(apierr.Timeout("deadline_exceeded", "too slow", nil), start.Add(time.Second))

	// A request that failed before its body was parsed.
	bad := p.StartRequest(context.Background(), &h, "/v1/chat/completions", start)
	bad.EndErr(apierr.Unauthorized("invalid_api_key", "no"), start.Add(time.Millisecond))

	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	for _, want := range []string{
		`tollgate_http_server_requests_total{gen_ai_request_model="m",http_request_method="POST",http_response_status_code="504",http_route="/v1/chat/completions"} 1`,
		`tollgate_http_server_requests_total{http_request_method="POST",http_response_status_code="401",http_route="/v1/chat/completions"} 1`,
		`gen_ai_server_request_duration_seconds_count{error_type="deadline_exceeded",gen_ai_operation_name="chat",gen_ai_request_model="m"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, `http_response_status_code="200"`) {
		t.Error("the detached handler copy was counted")
	}
}
