package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

const (
	testKey   = "sk-test"
	adminKey  = "sk-admin"
	testModel = "tiny"
)

// fakeDispatcher plays a script per request: the events to send, or an
// error to return. It records what it was asked and whether onEvent failed.
type fakeDispatcher struct {
	mu       sync.Mutex
	models   []task.ModelVersion
	tasks    []*task.Task
	script   func(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error
	onEventE error // last error returned by onEvent
}

func (d *fakeDispatcher) Models() []task.ModelVersion { return d.models }

func (d *fakeDispatcher) Dispatch(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	d.mu.Lock()
	d.tasks = append(d.tasks, t)
	d.mu.Unlock()
	wrapped := func(ev task.Event) error {
		err := onEvent(ev)
		if err != nil {
			d.mu.Lock()
			d.onEventE = err
			d.mu.Unlock()
		}
		return err
	}
	if d.script != nil {
		return d.script(ctx, t, wrapped)
	}
	return echoScript(ctx, t, wrapped)
}

func (d *fakeDispatcher) lastTask() *task.Task {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.tasks) == 0 {
		return nil
	}
	return d.tasks[len(d.tasks)-1]
}

// echoScript answers like a tiny engine: "Hello" " world", or embeddings.
func echoScript(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	if t.Model != testModel {
		return apierr.NotFound("model", "model_not_found", "The model '%s' does not exist", t.Model)
	}
	done := task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 2},
		Completion: &task.Completion{RequestID: t.RequestID, Model: t.Model, Subject: t.Subject}}
	if t.Kind == task.KindEmbedding {
		for range t.Inputs {
			done.Embeddings = append(done.Embeddings, []float32{0.6, 0.8})
		}
		done.Usage.CompletionTokens = 0
		return onEvent(done)
	}
	for _, s := range []string{"Hello", " world"} {
		if err := onEvent(task.Event{Type: task.EventDelta, Text: s, Tokens: 1}); err != nil {
			return err
		}
	}
	return onEvent(done)
}

type fakeLedger struct {
	mu       sync.Mutex
	recorded map[string]*task.Completion
	voids    map[string]*task.Void
}

func (l *fakeLedger) Record(_ context.Context, id string, c *task.Completion) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recorded == nil {
		l.recorded = map[string]*task.Completion{}
	}
	l.recorded[id] = c
	return nil
}

func (l *fakeLedger) Receipt(_ context.Context, id string) (json.RawMessage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.recorded[id]; ok {
		return json.Marshal(map[string]any{"id": id, "status": "pending", "request_id": c.RequestID,
			"completion_tokens": c.CompletionTokens, "finish_reason": c.FinishReason})
	}
	if v, ok := l.voids[id]; ok {
		return json.Marshal(map[string]any{"id": id, "status": "void", "request_id": v.RequestID, "error": v.Reason})
	}
	return nil, apierr.NotFound("id", "receipt_not_found", "no receipt %s", id)
}

func (l *fakeLedger) ReceiptOf(ctx context.Context, subject, id string) (json.RawMessage, error) {
	l.mu.Lock()
	c, ok := l.recorded[id]
	v, void := l.voids[id]
	l.mu.Unlock()
	if ok && c.Subject != subject || void && v.Subject != subject {
		return nil, apierr.NotFound("id", "receipt_not_found", "no receipt %s", id)
	}
	return l.Receipt(ctx, id)
}

func (l *fakeLedger) RecordVoid(_ context.Context, id string, v *task.Void) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.voids == nil {
		l.voids = map[string]*task.Void{}
	}
	l.voids[id] = v
	return nil
}

func (l *fakeLedger) Export(_ context.Context, after string, limit int) ([]json.RawMessage, string, error) {
	return []json.RawMessage{json.RawMessage(`{"id":"rcpt_a"}`)}, "", nil
}

func (l *fakeLedger) ExportOf(_ context.Context, subject, after string, limit int) ([]json.RawMessage, string, error) {
	return []json.RawMessage{json.RawMessage(`{"id":"rcpt_own"}`)}, "", nil
}

func (l *fakeLedger) VerifyingKey(_ context.Context, id string) ([]byte, error) {
	if id == "vk1" {
		return []byte{1, 2, 3}, nil
	}
	return nil, apierr.NotFound("id", "key_not_found", "no key")
}

func (l *fakeLedger) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.recorded[id]
	return ok
}

// notifyClock is a fake clock that reports each AfterFunc registration, so
// tests can advance it exactly when a timer is armed.
type notifyClock struct {
	*clock.Fake
	armed chan time.Duration
}

func (c *notifyClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	t := c.Fake.AfterFunc(d, f)
	select {
	case c.armed <- d:
	default:
	}
	return t
}

type harness struct {
	srv    *Server
	disp   *fakeDispatcher
	ledger *fakeLedger
	clock  *notifyClock
	client *http.Client
	ln     net.Listener
	served chan error
}

func newHarness(t testing.TB, mutate func(*Config, *Deps)) *harness {
	t.Helper()
	h := &harness{
		disp:   &fakeDispatcher{models: []task.ModelVersion{{Name: testModel, Digest: strings.Repeat("ab", 32)}, {Name: "org/model-b", Digest: strings.Repeat("cd", 32)}}},
		ledger: &fakeLedger{},
		clock:  &notifyClock{Fake: clock.NewFake(time.Unix(1_700_000_000, 0)), armed: make(chan time.Duration, 16)},
		served: make(chan error, 1),
	}
	cfg := Config{
		APIKeys:   []APIKey{{ID: "key1", Key: testKey}, {ID: "batch", Key: "sk-batch", Priority: task.PriorityBatch, Deadline: time.Minute}},
		AdminKeys: []string{adminKey},
		BodyLimit: 64 << 10,
		KeepAlive: 5 * time.Second,
	}
	deps := Deps{Dispatcher: h.disp, Ledger: h.ledger, Clock: h.clock, ListWorkers: func() any { return []map[string]string{{"worker_id": "0x01"}} }}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	// Loopback TCP rather than an in-memory pipe: the disconnect test needs
	// the kernel to report a closed peer.
	if h.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { h.served <- srv.Serve(h.ln) }()
	h.client = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		h.client.CloseIdleConnections()
	})
	return h
}

func (h *harness) do(t *testing.T, method, path, key, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+h.ln.Addr().String()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const chatOK = `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`

func TestErrors(t *testing.T) {
	h := newHarness(t, func(c *Config, d *Deps) {})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		switch tk.Model {
		case "shed":
			return apierr.RateLimited("overloaded", "too busy", 1500*time.Millisecond)
		case "none":
			return apierr.Unavailable("no_healthy_worker", "no worker", errors.New("all down"))
		case "late":
			return apierr.Timeout("deadline_exceeded", "deadline passed", nil)
		case "boom":
			return errors.New("secret internal detail")
		case "engine":
			return onEvent(task.Event{Type: task.EventFailed, Error: &task.EventError{Status: 400, Type: apierr.TypeInvalidRequest, Code: "context_length_exceeded", Param: "messages", Message: "too long"}})
		}
		return echoScript(ctx, tk, onEvent)
	}
	big := `{"model":"tiny","messages":[{"role":"user","content":"` + strings.Repeat("x", 70<<10) + `"}]}`
	tests := []struct {
		name       string
		method     string
		path       string
		key        string
		body       string
		status     int
		typ        string
		param      any // string or nil
		code       any
		retryAfter string
	}{
		{"malformed json", "POST", "/v1/chat/completions", testKey, `{"model":`, 400, "invalid_request_error", nil, "invalid_json", ""},
		{"wrong type", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":"warm"}`, 400, "invalid_request_error", "temperature", "invalid_type", ""},
		{"missing model", "POST", "/v1/chat/completions", testKey, `{"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "model", "missing_required_parameter", ""},
		{"missing messages", "POST", "/v1/chat/completions", testKey, `{"model":"tiny"}`, 400, "invalid_request_error", "messages", "missing_required_parameter", ""},
		{"empty messages", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[]}`, 400, "invalid_request_error", "messages", "invalid_value", ""},
		{"unknown role", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"robot","content":"hi"}]}`, 400, "invalid_request_error", "messages[0].role", "invalid_role", ""},
		{"n above 8", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"n":9}`, 400, "invalid_request_error", "n", "invalid_value", ""},
		{"negative max_tokens", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":-3}`, 400, "invalid_request_error", "max_tokens", "invalid_value", ""},
		{"huge max_tokens", "POST", "/v1/completions", testKey, `{"model":"tiny","prompt":"x","max_tokens":99999999}`, 400, "invalid_request_error", "max_tokens", "invalid_value", ""},
		{"temperature out of range", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":3}`, 400, "invalid_request_error", "temperature", "invalid_value", ""},
		{"tool without function", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}`, 400, "invalid_request_error", "tools[0].function", "missing_required_parameter", ""},
		{"unsupported parameter", "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}]}`, 400, "invalid_request_error", "functions", "unsupported_parameter", ""},
		{"unknown parameter", "POST", "/v1/embeddings", testKey, `{"model":"tiny","input":"x","stream":true}`, 400, "invalid_request_error", "stream", "unknown_parameter", ""},
		{"unknown model", "POST", "/v1/chat/completions", testKey, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, 404, "invalid_request_error", "model", "model_not_found", ""},
		{"unknown model streaming", "POST", "/v1/chat/completions", testKey, `{"model":"nope","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 404, "invalid_request_error", "model", "model_not_found", ""},
		{"unknown model get", "GET", "/v1/models/nope", testKey, ``, 404, "invalid_request_error", "model", "model_not_found", ""},
		{"missing key", "POST", "/v1/chat/completions", "", chatOK, 401, "authentication_error", nil, "missing_api_key", ""},
		{"wrong key", "POST", "/v1/chat/completions", "sk-wrong", chatOK, 401, "authentication_error", nil, "invalid_api_key", ""},
		{"models need key", "GET", "/v1/models", "", ``, 401, "authentication_error", nil, "missing_api_key", ""},
		{"oversized body", "POST", "/v1/chat/completions", testKey, big, 413, "invalid_request_error", nil, "request_too_large", ""},
		{"shed", "POST", "/v1/chat/completions", testKey, `{"model":"shed","messages":[{"role":"user","content":"hi"}]}`, 429, "rate_limit_error", nil, "overloaded", "2"},
		{"shed streaming", "POST", "/v1/chat/completions", testKey, `{"model":"shed","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 429, "rate_limit_error", nil, "overloaded", "2"},
		{"no worker", "POST", "/v1/completions", testKey, `{"model":"none","prompt":"x"}`, 503, "service_unavailable", nil, "no_healthy_worker", ""},
		{"deadline", "POST", "/v1/chat/completions", testKey, `{"model":"late","messages":[{"role":"user","content":"hi"}]}`, 504, "timeout_error", nil, "deadline_exceeded", ""},
		{"internal error hides cause", "POST", "/v1/chat/completions", testKey, `{"model":"boom","messages":[{"role":"user","content":"hi"}]}`, 500, "server_error", nil, "internal_error", ""},
		{"engine error event", "POST", "/v1/chat/completions", testKey, `{"model":"engine","messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "messages", "context_length_exceeded", ""},
		{"engine error event streaming", "POST", "/v1/chat/completions", testKey, `{"model":"engine","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "messages", "context_length_exceeded", ""},
		{"unknown route", "GET", "/v1/nothing", testKey, ``, 404, "invalid_request_error", nil, "unknown_url", ""},
		{"wrong method", "GET", "/v1/chat/completions", testKey, ``, 405, "invalid_request_error", nil, "method_not_allowed", ""},
		{"admin needs admin key", "GET", "/v1/workers", testKey, ``, 403, "permission_error", nil, "admin_key_required", ""},
		{"admin without key", "GET", "/v1/workers", "", ``, 401, "authentication_error", nil, "missing_api_key", ""},
		{"receipt unknown", "GET", "/v1/receipts/rcpt_nope", testKey, ``, 404, "invalid_request_error", "id", "receipt_not_found", ""},
		{"receipts bad limit", "GET", "/v1/receipts?limit=0", testKey, ``, 400, "invalid_request_error", "limit", "invalid_value", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, tc.method, tc.path, tc.key, tc.body)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if resp.Header.Get(HeaderRequestID) == "" {
				t.Error("no X-Request-Id on an error")
			}
			if resp.Header.Get(HeaderReceipt) != "" {
				t.Error("X-Tollgate-Receipt on an error")
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			var env map[string]map[string]any
			if err := json.Unmarshal([]byte(body), &env); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			e := env["error"]
			if len(env) != 1 || len(e) != 4 {
				t.Fatalf("body %s is not exactly {error:{message,type,param,code}}", body)
			}
			got := map[string]any{"type": e["type"], "param": e["param"], "code": e["code"]}
			want := map[string]any{"type": tc.typ, "param": tc.param, "code": tc.code}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("error (-got +want):\n%s\nbody %s", diff, body)
			}
			if msg, _ := e["message"].(string); msg == "" || strings.Contains(msg, "secret") {
				t.Errorf("message %q is empty or leaks the cause", msg)
			}
		})
	}
}

func TestChatJSON(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":7}`, HeaderRequestID, "my-req-1")
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get(HeaderRequestID); got != "my-req-1" {
		t.Errorf("X-Request-Id = %q, want the client's", got)
	}
	rcpt := resp.Header.Get(HeaderReceipt)
	if !strings.HasPrefix(rcpt, "rcpt_") || !h.ledger.has(rcpt) {
		t.Errorf("receipt %q not recorded", rcpt)
	}
	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index        int            `json:"index"`
			Message      map[string]any `json:"message"`
			FinishReason string         `json:"finish_reason"`
		} `json:"choices"`
		Usage map[string]int `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Created != 1_700_000_000 || got.Model != "tiny" {
		t.Errorf("envelope wrong: %s", body)
	}
	wantChoices := `[{"index":0,"message":{"content":"Hello world","refusal":null,"role":"assistant"},"finish_reason":"stop"}]`
	gotChoices, _ := json.Marshal(got.Choices)
	if string(gotChoices) != wantChoices {
		t.Errorf("choices = %s, want %s", gotChoices, wantChoices)
	}
	if diff := cmp.Diff(got.Usage, map[string]int{"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}); diff != "" {
		t.Errorf("usage (-got +want):\n%s", diff)
	}
	tk := h.disp.lastTask()
	if !strings.HasPrefix(tk.RequestID, "my-req-1.req_") || tk.Subject != "key1" || tk.MaxTokens != 7 || tk.Deadline.IsZero() {
		t.Errorf("task = %+v", tk)
	}
}

func TestRequestIDReplacedWhenInvalid(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "GET", "/healthz", "", "", HeaderRequestID, strings.Repeat("x", 200))
	readAll(t, resp)
	if got := resp.Header.Get(HeaderRequestID); !strings.HasPrefix(got, "req_") {
		t.Errorf("X-Request-Id = %q, want a generated one", got)
	}
}

func TestKeyPriorityAndDeadline(t *testing.T) {
	h := newHarness(t, nil)
	readAll(t, h.do(t, "POST", "/v1/chat/completions", "sk-batch", chatOK))
	tk := h.disp.lastTask()
	if tk.Priority != task.PriorityBatch || tk.Subject != "batch" {
		t.Errorf("task priority %v subject %q", tk.Priority, tk.Subject)
	}
	if want := h.clock.Now().Add(time.Minute); !tk.Deadline.Equal(want) {
		t.Errorf("deadline %v, want %v", tk.Deadline, want)
	}
}

// sseEvents reads an SSE body into its data payloads (comments included
// as ": ..." entries).
func sseEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data: "):
			out = append(out, strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, ":"):
			out = append(out, line)
		}
	}
	return out
}

func TestChatStreamWithUsage(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rcpt := resp.Header.Get(HeaderReceipt)
	events := sseEvents(t, resp.Body)
	if len(events) != 6 || events[5] != "[DONE]" {
		t.Fatalf("events = %q", events)
	}
	type chunk struct {
		Object  string `json:"object"`
		Choices []struct {
			Delta        map[string]any `json:"delta"`
			FinishReason *string        `json:"finish_reason"`
		} `json:"choices"`
		Usage *map[string]int `json:"usage"`
	}
	var got []string
	for _, e := range events[:5] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %q: %v", e, err)
		}
		if c.Object != "chat.completion.chunk" {
			t.Errorf("object %q", c.Object)
		}
		switch {
		case c.Usage != nil:
			got = append(got, fmt.Sprintf("usage %v choices %d", *c.Usage, len(c.Choices)))
		case c.Choices[0].FinishReason != nil:
			got = append(got, "finish "+*c.Choices[0].FinishReason)
		default:
			got = append(got, fmt.Sprintf("delta %v", c.Choices[0].Delta))
		}
	}
	want := []string{
		"delta map[content: role:assistant]",
		"delta map[content:Hello]",
		"delta map[content: world]",
		"finish stop",
		"usage map[completion_tokens:2 prompt_tokens:5 total_tokens:7] choices 0",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("chunks (-got +want):\n%s", diff)
	}
	if !h.ledger.has(rcpt) {
		t.Errorf("receipt %q from the SSE headers not recorded", rcpt)
	}
}

func TestCompletionStreamWithoutUsage(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "POST", "/v1/completions", testKey, `{"model":"tiny","stream":true,"prompt":"once"}`)
	events := sseEvents(t, resp.Body)
	resp.Body.Close()
	want := []string{
		`{"id":"X","object":"text_completion","created":1700000000,"model":"tiny","choices":[{"text":"Hello","index":0,"logprobs":null,"finish_reason":null}],"system_fingerprint":null}`,
		`{"id":"X","object":"text_completion","created":1700000000,"model":"tiny","choices":[{"text":" world","index":0,"logprobs":null,"finish_reason":null}],"system_fingerprint":null}`,
		`{"id":"X","object":"text_completion","created":1700000000,"model":"tiny","choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}],"system_fingerprint":null}`,
		`[DONE]`,
	}
	for i := range events {
		var m map[string]any
		if json.Unmarshal([]byte(events[i]), &m) == nil {
			events[i] = strings.Replace(events[i], m["id"].(string), "X", 1)
		}
	}
	if diff := cmp.Diff(events, want); diff != "" {
		t.Errorf("events (-got +want):\n%s", diff)
	}
}

func TestCompletionJSON(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "POST", "/v1/completions", testKey, `{"model":"tiny","prompt":["once"]}`)
	body := readAll(t, resp)
	var got struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage map[string]int `json:"usage"`
	}
	json.Unmarshal([]byte(body), &got)
	if got.Object != "text_completion" || len(got.Choices) != 1 || got.Choices[0].Text != "Hello world" || got.Choices[0].FinishReason != "stop" || got.Usage["total_tokens"] != 7 {
		t.Errorf("body %s", body)
	}
	if mt := h.disp.lastTask().MaxTokens; mt != 16 {
		t.Errorf("default max_tokens = %d, want 16", mt)
	}
}

func TestEmbeddings(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"float string", `{"model":"tiny","input":"a"}`, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.6,0.8]}],"model":"tiny","usage":{"prompt_tokens":5,"total_tokens":5}}`},
		{"base64 array", `{"model":"tiny","input":["a","b"],"encoding_format":"base64"}`, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":"mpkZP83MTD8="},{"object":"embedding","index":1,"embedding":"mpkZP83MTD8="}],"model":"tiny","usage":{"prompt_tokens":5,"total_tokens":5}}`},
	}
	h := newHarness(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "POST", "/v1/embeddings", testKey, tc.body)
			if got := readAll(t, resp); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestModels(t *testing.T) {
	h := newHarness(t, nil)
	body := readAll(t, h.do(t, "GET", "/v1/models", testKey, ""))
	want := `{"object":"list","data":[{"id":"tiny","object":"model","created":1700000000,"owned_by":"tollgate"},{"id":"org/model-b","object":"model","created":1700000000,"owned_by":"tollgate"}]}`
	if body != want {
		t.Errorf("got %s\nwant %s", body, want)
	}
	body = readAll(t, h.do(t, "GET", "/v1/models/org/model-b", testKey, ""))
	if want := `{"id":"org/model-b","object":"model","created":1700000000,"owned_by":"tollgate"}`; body != want {
		t.Errorf("got %s\nwant %s", body, want)
	}
}

func TestHealthAndReady(t *testing.T) {
	h := newHarness(t, nil)
	if resp := h.do(t, "GET", "/healthz", "", ""); resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	if resp := h.do(t, "GET", "/readyz", "", ""); resp.StatusCode != 200 {
		t.Errorf("readyz %d", resp.StatusCode)
	}
	h.disp.models = nil
	resp := h.do(t, "GET", "/readyz", "", "")
	if body := readAll(t, resp); resp.StatusCode != 503 || !strings.Contains(body, "no_workers") {
		t.Errorf("readyz without workers: %d %s", resp.StatusCode, body)
	}
}

func TestAdminAndReceipts(t *testing.T) {
	h := newHarness(t, nil)
	if body := readAll(t, h.do(t, "GET", "/v1/workers", adminKey, "")); body != `{"data":[{"worker_id":"0x01"}],"object":"list"}` {
		t.Errorf("workers = %s", body)
	}
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK)
	readAll(t, resp)
	id := resp.Header.Get(HeaderReceipt)
	if body := readAll(t, h.do(t, "GET", "/v1/receipts/"+id, testKey, "")); !strings.Contains(body, `"status":"pending"`) {
		t.Errorf("receipt = %s", body)
	}
	if body := readAll(t, h.do(t, "GET", "/v1/receipts?after=x&limit=5", adminKey, "")); body != `{"data":[{"id":"rcpt_a"}],"has_more":false,"object":"list"}` {
		t.Errorf("export = %s", body)
	}
	if body := readAll(t, h.do(t, "GET", "/v1/zk/keys/vk1", "", "")); body != "\x01\x02\x03" {
		t.Errorf("vk = %q", body)
	}
}

func TestReceiptsOff(t *testing.T) {
	h := newHarness(t, func(c *Config, d *Deps) { d.Ledger = nil })
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK)
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderReceipt) != "" {
		t.Errorf("status %d receipt %q", resp.StatusCode, resp.Header.Get(HeaderReceipt))
	}
	resp = h.do(t, "GET", "/v1/receipts/rcpt_x", testKey, "")
	if body := readAll(t, resp); resp.StatusCode != 404 || !strings.Contains(body, "receipts_disabled") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}

// gatedScript sends one delta, then waits for release (or cancellation),
// then finishes; it reports the onEvent error it saw on cancelled.
func gatedScript(release <-chan struct{}, cancelled chan<- error) func(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	return func(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
		if err := onEvent(task.Event{Type: task.EventDelta, Text: "first", Tokens: 1}); err != nil {
			cancelled <- err
			return err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		for {
			// Keep producing until the client is gone or released.
			err := onEvent(task.Event{Type: task.EventDelta, Text: "more", Tokens: 1})
			if err != nil {
				cancelled <- err
				return err
			}
			select {
			case <-release:
				return onEvent(task.Event{Type: task.EventDone, FinishReason: "length", Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 2}, Completion: &task.Completion{}})
			default:
			}
		}
	}
}

func TestClientDisconnectCancelsWork(t *testing.T) {
	h := newHarness(t, nil)
	cancelled := make(chan error, 1)
	gone := make(chan struct{})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		if err := onEvent(task.Event{Type: task.EventDelta, Text: "first", Tokens: 1}); err != nil {
			cancelled <- err
			return err
		}
		<-gone
		// A long generation: keep producing until the request's context
		// ends (the scheduler then stops the task on its worker).
		for range 1_000_000 {
			if err := onEvent(task.Event{Type: task.EventDelta, Text: "more", Tokens: 1}); err != nil {
				cancelled <- err
				return err
			}
			if ctx.Err() != nil {
				cancelled <- context.Cause(ctx)
				return context.Cause(ctx)
			}
		}
		cancelled <- nil
		return nil
	}
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, "first") {
			break
		}
	}
	resp.Body.Close() // the client goes away mid-stream
	h.client.CloseIdleConnections()
	close(gone)
	if err := <-cancelled; !errors.Is(err, errClientClosed) {
		t.Fatalf("the request's work went on after the client left (%v)", err)
	}
}

func TestKeepAliveOnIdleStream(t *testing.T) {
	h := newHarness(t, nil)
	release := make(chan struct{})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		if err := onEvent(task.Event{Type: task.EventDelta, Text: "a", Tokens: 1}); err != nil {
			return err
		}
		<-release
		return onEvent(task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{}, Completion: &task.Completion{}})
	}
	resp := h.do(t, "POST", "/v1/completions", testKey, `{"model":"tiny","stream":true,"prompt":"x"}`)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readUntil := func(sub string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading for %q: %v", sub, err)
			}
			if strings.Contains(line, sub) {
				return
			}
		}
	}
	readUntil(`"text":"a"`)
	if d := <-h.clock.armed; d != 5*time.Second {
		t.Fatalf("keepalive armed for %v", d)
	}
	h.clock.Advance(5 * time.Second)
	readUntil(": keepalive")
	close(release)
	readUntil("[DONE]")
}

func TestShutdownLetsStreamsFinish(t *testing.T) {
	h := newHarness(t, nil)
	release := make(chan struct{})
	cancelled := make(chan error, 1)
	h.disp.script = gatedScript(release, cancelled)
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a stream was in flight", err)
	default:
	}
	close(release)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("stream did not finish cleanly: %q", rest)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	d := &fakeDispatcher{}
	tests := []struct {
		name string
		cfg  Config
		deps Deps
	}{
		{"no dispatcher", Config{}, Deps{}},
		{"key without id", Config{APIKeys: []APIKey{{Key: "k"}}}, Deps{Dispatcher: d}},
		{"duplicate id", Config{APIKeys: []APIKey{{ID: "a", Key: "k"}, {ID: "a", Key: "j"}}}, Deps{Dispatcher: d}},
		{"duplicate secret", Config{APIKeys: []APIKey{{ID: "a", Key: "k"}, {ID: "b", Key: "k"}}}, Deps{Dispatcher: d}},
		{"empty admin key", Config{AdminKeys: []string{""}}, Deps{Dispatcher: d}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tc.deps); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

// TestStreamFailsMidway: once the SSE headers are out, a failure is sent
// the way OpenAI does, as an error data event, and the stream ends without
// [DONE].
func TestStreamFailsMidway(t *testing.T) {
	tests := []struct {
		name   string
		script func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error
		code   string
	}{
		{"engine error event", func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			onEvent(task.Event{Type: task.EventDelta, Text: "partial", Tokens: 1})
			return onEvent(task.Event{Type: task.EventFailed, Error: &task.EventError{Status: 500, Type: apierr.TypeServer, Code: "engine_crashed", Message: "engine crashed"}})
		}, "engine_crashed"},
		{"dispatch error after output", func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			onEvent(task.Event{Type: task.EventDelta, Text: "partial", Tokens: 1})
			return apierr.Timeout("deadline_exceeded", "deadline passed", nil)
		}, "deadline_exceeded"},
		{"no done event", func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			return onEvent(task.Event{Type: task.EventDelta, Text: "partial", Tokens: 1})
		}, "internal_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.disp.script = tc.script
			resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			events := sseEvents(t, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(events) != 3 {
				t.Fatalf("status %d events %q", resp.StatusCode, events)
			}
			var e struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(events[2]), &e); err != nil || e.Error.Code != tc.code {
				t.Errorf("last event %q, want an error with code %q", events[2], tc.code)
			}
		})
	}
}

func TestDeadlineHeader(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		name   string
		value  string
		status int
		want   time.Duration // deadline after now, for accepted values
	}{
		{"milliseconds", "250", 200, 250 * time.Millisecond},
		{"one hour", "3600000", 200, time.Hour},
		{"not a number", "soon", 400, 0},
		{"zero", "0", 400, 0},
		{"negative", "-5", 400, 0},
		{"over an hour", "3600001", 400, 0},
		{"fraction", "1.5", 400, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK, HeaderDeadline, tc.value)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				if !strings.Contains(body, `"param":"X-Tollgate-Deadline-Ms"`) || !strings.Contains(body, `"code":"invalid_header"`) {
					t.Errorf("error body %s", body)
				}
				return
			}
			if got := h.disp.lastTask().Deadline.Sub(h.clock.Now()); got != tc.want {
				t.Errorf("deadline in %v, want %v", got, tc.want)
			}
		})
	}
}
