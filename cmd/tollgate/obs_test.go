package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/zk"
)

// keptSpans is the in-memory exporter without its Shutdown, which would
// clear the spans when the stack stops.
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

// startObsDev runs the dev stack (real gateway, scheduler, worker link and
// agent over loopback, simulator engine, receipts on) with Prometheus
// metrics and every span kept in memory. stop is safe to call twice.
func startObsDev(t *testing.T) (d *devStack, spans *tracetest.InMemoryExporter, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spans = tracetest.NewInMemoryExporter()
	var logs lockedBuffer // shown only if the test fails
	o := devOptions{ln: ln, logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	o.gateway = gatewayFlags{data: t.TempDir(), apiKey: sdkKey, adminKey: "sk-admin-test", noProver: true}
	o.gateway.obs.options = []obs.Option{obs.WithSpanExporter(keptSpans{spans})}
	o.engine = engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}
	d, err = startDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := d.stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
			if t.Failed() {
				t.Logf("tollgate dev log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stop)
	return d, spans, stop
}

func post(t *testing.T, url, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return resp, string(b)
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

const clientTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestObservabilityEndToEnd is issue 8's "done when" on the real stack:
// one connected trace for a streamed request from the client's
// traceparent through gateway, scheduler, batcher, worker link, agent and
// engine; the prover's batch trace linked to it; /metrics with every
// metric after traffic; and the status page.
func TestObservabilityEndToEnd(t *testing.T) {
	d, spans, stop := startObsDev(t)
	model := firstModel(d)
	base := d.URL()

	// Traffic: a streamed chat carrying the client's trace context, then
	// unary chat, completion and embeddings.
	resp, body := post(t, base+"/v1/chat/completions",
		`{"model":"`+model+`","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Once upon a time"}]}`,
		map[string]string{"traceparent": clientTraceparent})
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("stream did not finish:\n%s", body)
	}
	streamReceipt := resp.Header.Get("X-Tollgate-Receipt")
	post(t, base+"/v1/chat/completions", `{"model":"`+model+`","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, nil)
	post(t, base+"/v1/completions", `{"model":"`+model+`","max_tokens":8,"prompt":"hello"}`, nil)
	post(t, base+"/v1/embeddings", `{"model":"`+model+`","input":["a","b"]}`, nil)

	t.Run("metrics", func(t *testing.T) {
		checkMetrics(t, get(t, base+"/metrics"), model)
	})

	t.Run("worker metrics", func(t *testing.T) {
		// GPU telemetry (none here) and the worker's own metrics in one
		// exposition; dev shares one provider, so the gateway's show too.
		if m := get(t, d.gw.sched.Workers()[0].URL+"/metrics"); !strings.Contains(m, "tollgate_") {
			t.Errorf("worker /metrics has no tollgate metrics:\n%s", m)
		}
	})

	t.Run("status page", func(t *testing.T) {
		page := get(t, base+"/")
		for _, want := range []string{"<html", model, d.gw.sched.Workers()[0].WorkerID[:12], "Receipts"} {
			if !strings.Contains(page, want) {
				t.Errorf("status page lacks %q", want)
			}
		}
		if u := d.gw.sched.Workers()[0].URL; strings.Contains(page, u) {
			t.Errorf("status page shows the worker URL %s", u)
		}
		screenshot(t, base+"/")
	})

	// The prover proves the receipts (keys for the smallest batch are
	// shared with the zk tests), countersigned by the real worker.
	keyDir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
		t.Fatal(err)
	}
	pl, err := prover.New(d.gw.ledger, prover.Config{KeyDir: keyDir, Obs: d.obs,
		Clock: clock.NewFake(time.Now().Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := pl.Step(context.Background()); err != nil || n == 0 {
		t.Fatalf("prover proved %d receipts, err %v", n, err)
	}

	stop() // streams and worker handlers end, every span is exported
	checkTrace(t, spans.GetSpans(), streamReceipt)
}

// checkTrace finds the client's trace and checks it is one tree under the
// client's span, crossing every layer, and that the prover's batch span
// (its own trace) links to it.
func checkTrace(t *testing.T, all tracetest.SpanStubs, receipt string) {
	t.Helper()
	clientSpan := obs.ParseTraceparent(clientTraceparent)
	byID := map[string]tracetest.SpanStub{}
	var trace []tracetest.SpanStub
	for _, s := range all {
		if s.SpanContext.TraceID() == clientSpan.TraceID() {
			trace = append(trace, s)
			byID[s.SpanContext.SpanID().String()] = s
		}
	}
	names := map[string]bool{}
	for _, s := range trace {
		names[s.Name] = true
		p := s.Parent.SpanID()
		if _, ok := byID[p.String()]; !ok && p != clientSpan.SpanID() {
			t.Errorf("span %q has parent %s outside the trace: the trace is not connected", s.Name, p)
		}
	}
	for _, want := range []string{"POST /v1/chat/completions", "scheduler.dispatch", "batcher.queue", "POST /v1/worker/batch", "worker.task", "engine.generate"} {
		if !names[want] {
			t.Errorf("trace lacks span %q; has %v", want, names)
		}
	}
	var linked bool
	for _, s := range all {
		if s.Name != "prover.batch" {
			continue
		}
		if s.SpanContext.TraceID() == clientSpan.TraceID() {
			t.Errorf("prover.batch is inside the request's trace; want its own, linked")
		}
		for _, l := range s.Links {
			if l.SpanContext.TraceID() == clientSpan.TraceID() {
				linked = true
			}
		}
	}
	if !linked {
		t.Errorf("no prover.batch span links to the streamed request's trace (receipt %s)", receipt)
	}
}

// checkMetrics checks that every metric issue 8 names is exported with a
// sane value after the traffic above.
func checkMetrics(t *testing.T, text, model string) {
	t.Helper()
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			continue
		}
		samples[line[:i]] = v
	}
	// find returns the sum over the series of name whose labels contain
	// every one of labels.
	find := func(name string, labels ...string) (float64, bool) {
		var sum float64
		found := false
	series:
		for k, v := range samples {
			n, rest, _ := strings.Cut(k, "{")
			if n != name {
				continue
			}
			for _, l := range labels {
				if !strings.Contains(rest, l) {
					continue series
				}
			}
			sum, found = sum+v, true
		}
		return sum, found
	}
	m := `gen_ai_request_model="` + model + `"`
	cases := []struct {
		name, metric string
		labels       []string
		min          float64 // the sum must be at least this (and finite)
	}{
		{"requests by route/model/status", "tollgate_http_server_requests_total", []string{`http_route="/v1/chat/completions"`, m, `http_response_status_code="200"`}, 2},
		{"request duration", "http_server_request_duration_seconds_count", []string{`http_route="/v1/embeddings"`}, 1},
		{"genai request duration", "gen_ai_server_request_duration_seconds_count", []string{m}, 4},
		{"ttft", "gen_ai_server_time_to_first_token_seconds_count", []string{m}, 3},
		{"tpot", "gen_ai_server_time_per_output_token_seconds_count", []string{m}, 1},
		{"tokens in", "gen_ai_client_token_usage_sum", []string{m, `gen_ai_token_type="input"`}, 4},
		{"tokens out", "gen_ai_client_token_usage_sum", []string{m, `gen_ai_token_type="output"`}, 3},
		{"queue length", "tollgate_scheduler_queue_length", nil, 0},
		{"queue wait", "tollgate_scheduler_queue_wait_seconds_count", nil, 4},
		{"decision latency", "tollgate_scheduler_decision_duration_seconds_count", nil, 1},
		{"batch size", "tollgate_batch_size_count", nil, 1},
		{"healthy workers", "tollgate_workers", []string{`state="healthy"`}, 1},
		{"receipts pending", "tollgate_receipts", []string{`status="pending"`}, 4},
		{"receipts proven", "tollgate_receipts", []string{`status="proven"`}, 0},
		{"receipts failed", "tollgate_receipts", []string{`status="failed"`}, 0},
		{"ledger write latency", "tollgate_ledger_write_duration_seconds_count", nil, 4},
		{"proving time (declared)", "tollgate_receipts_proving_duration_seconds_count", nil, 0},
	}
	for _, c := range cases {
		v, ok := find(c.metric, c.labels...)
		if c.metric == "tollgate_receipts_proving_duration_seconds_count" && !ok {
			// A histogram has no series before its first observation; the
			// prover's own test scrapes it after proving.
			if !strings.Contains(text, "# HELP tollgate_receipts_proving_duration_seconds") {
				t.Logf("%s: no series before the first proof", c.name)
			}
			continue
		}
		if !ok || v < c.min || v != v {
			t.Errorf("%s: %s%v = %v (present %v); want ≥ %v", c.name, c.metric, c.labels, v, ok, c.min)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", text)
	}
}

// screenshot renders url in headless Chromium and checks the PNG; skipped
// only where Chromium is absent.
func screenshot(t *testing.T, url string) {
	t.Helper()
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium is not installed (apt-get install chromium); skipping the status page screenshot")
	}
	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--screenshot="+shot, "--window-size=1280,900", url)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 || string(b[1:4]) != "PNG" || len(b) < 10_000 {
		t.Fatalf("screenshot is not a plausible PNG of a page (%d bytes)", len(b))
	}
	if out := os.Getenv("TOLLGATE_SCREENSHOT_OUT"); out != "" {
		_ = os.WriteFile(out, b, 0o644)
	}
}

// TestWorkerRefusesBatchWithoutSessionToken checks the worker-link
// authentication of the real worker: the gateway's link (which presents
// the session token) serves, a batch from anyone else gets 401.
func TestWorkerRefusesBatchWithoutSessionToken(t *testing.T) {
	d := startTestDev(t)
	ws := d.gw.sched.Workers()
	if len(ws) != 1 {
		t.Fatalf("%d workers registered, want 1", len(ws))
	}
	batch := `{"id":"b1","tasks":[{"request_id":"r1","kind":"chat","model":"` + firstModel(d) + `","prompt":"hi","max_tokens":4}]}`
	for _, tc := range []struct{ name, auth string }{
		{"no token", ""},
		{"wrong token", "Bearer not-the-session-token"},
		{"provider token is not a session token", "Bearer " + d.gw.cfg.ProviderTokens[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, ws[0].URL+"/v1/worker/batch", strings.NewReader(batch))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
		})
	}
	// The gateway's own link carries the token.
	post(t, d.URL()+"/v1/chat/completions", `{"model":"`+firstModel(d)+`","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, nil)
}
