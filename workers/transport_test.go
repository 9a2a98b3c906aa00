package workers_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

func serveAgent(t *testing.T, a *workers.Agent) *workers.Client {
	t.Helper()
	srv := httptest.NewServer(workers.NewHandler(a, nil))
	t.Cleanup(srv.Close)
	return workers.NewClient(srv.URL, linkOptions())
}

// linkOptions are a link's options for an agent on the tests' fake clock
// (newAgent): its records are checked against that clock.
func linkOptions() workers.ClientOptions {
	return workers.ClientOptions{Records: workers.RecordPolicy{Clock: clock.NewFake(t0)}}
}

func TestClientRoundTrip(t *testing.T) {
	c := serveAgent(t, newAgent(t, simEngine(t)))
	b := &task.Batch{ID: "b1", Tasks: []task.Task{
		chatTask("r0"),
		{RequestID: "r1", Kind: task.KindEmbedding, Model: "sim-tiny", Inputs: []string{"x y"}},
		{RequestID: "r2", Kind: task.KindCompletion, Model: "missing", Prompt: "p"},
	}}
	var got collected
	err := c.Run(context.Background(), b, func(ev task.Event) { got.emit(ev) })
	if err != nil {
		t.Fatal(err)
	}
	if ev := got.last(t, 0); ev.Type != task.EventDone || len(got.events[0]) < 2 {
		t.Errorf("chat: %d events ending %+v", len(got.events[0]), ev)
	}
	if ev := got.last(t, 1); ev.Type != task.EventDone || len(ev.Embeddings) != 1 {
		t.Errorf("embedding: %+v", ev)
	}
	if ev := got.last(t, 2); ev.Type != task.EventFailed || ev.Error.Code != "model_not_found" {
		t.Errorf("unknown model: %+v", ev)
	}
}

func TestClientDisconnectCancelsBatch(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 1)}
	a := newAgent(t, eng)
	c := serveAgent(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0")}}, func(task.Event) {})
	}()
	<-eng.started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	// The worker sees the disconnect and ends the task.
	if err := a.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestClientCancel(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 1)}
	c := serveAgent(t, newAgent(t, eng))
	var got collected
	done := make(chan error, 1)
	go func() {
		done <- c.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0")}}, func(ev task.Event) { got.emit(ev) })
	}()
	<-eng.started
	if err := c.Cancel(context.Background(), "b", 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ev := got.last(t, 0); ev.Type != task.EventFailed || ev.Error.Code != workers.CodeCancelled {
		t.Errorf("cancelled task: %+v", ev)
	}
}

func TestClientRefusals(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(a *workers.Agent)
		batch     *task.Batch
		status    int
		retryable bool
	}{
		{"draining", func(a *workers.Agent) { a.Drain(context.Background()) },
			&task.Batch{ID: "b", Tasks: []task.Task{chatTask("r")}}, http.StatusServiceUnavailable, true},
		{"invalid batch", nil, &task.Batch{ID: "b"}, http.StatusBadRequest, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t, simEngine(t))
			if tc.setup != nil {
				tc.setup(a)
			}
			err := serveAgent(t, a).Run(context.Background(), tc.batch, func(task.Event) { t.Error("event delivered") })
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
			if workers.Retryable(err) != tc.retryable {
				t.Errorf("Retryable = %v, want %v", workers.Retryable(err), tc.retryable)
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := workers.NewClient(url, workers.ClientOptions{}).Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r")}}, func(task.Event) {})
	if !workers.Retryable(err) {
		t.Fatalf("connection refused must be retryable: %v", err)
	}
}

// doneLine is a done event for chatTask(id) whose record describes it and
// text, the bytes its deltas carried.
func doneLine(id, text string) string {
	tk := chatTask(id)
	rq, rs := tk.Digest(), sha256.Sum256([]byte(text))
	return fmt.Sprintf(`{"i":0,"t":"done","finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":1},`+
		`"completion":{"request_id":%q,"request_digest":"%x","response_digest":"%x","subject":%q,"prompt_tokens":1,"completion_tokens":1,"time":%q}}`,
		id, rq, rs, tk.Subject, t0.Format(time.RFC3339Nano))
}

var validDone = doneLine("r0", "")

// TestClientValidatesStream feeds the client hand-written streams from a fake
// worker and checks that every malformed frame fails the link.
func TestClientValidatesStream(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantErr   bool
		retryable bool
		delivered int
	}{
		{"valid", `{"i":0,"t":"delta","text":"a","tokens":1}` + "\n" + doneLine("r0", "a") + "\n", false, false, 2},
		{"blank lines are skipped", "\n" + validDone + "\n", false, false, 1},
		{"unknown index", `{"i":5,"t":"delta","text":"a"}` + "\n", true, true, 0},
		{"negative index", `{"i":-1,"t":"delta","text":"a"}` + "\n", true, true, 0},
		{"unknown type", `{"i":0,"t":"weird"}` + "\n", true, true, 0},
		{"done without completion", `{"i":0,"t":"done","finish_reason":"stop","usage":{}}` + "\n", true, true, 0},
		{"done names another request", strings.Replace(validDone, `"r0"`, `"r9"`, 1) + "\n", true, true, 0},
		{"bad digest", strings.Replace(validDone, `"request_digest":"`, `"request_digest":"xyz`, 1) + "\n", true, true, 0},
		{"bad finish reason", strings.Replace(validDone, `"stop"`, `"tired"`, 1) + "\n", true, true, 0},
		{"error without error", `{"i":0,"t":"error"}` + "\n", true, true, 0},
		{"event after done", validDone + "\n" + `{"i":0,"t":"delta","text":"a"}` + "\n", false, false, 1},
		{"duplicate done in a two-task batch", validDone + "\n" + validDone + "\n", true, false, 1},
		{"negative tokens", `{"i":0,"t":"delta","text":"a","tokens":-3}` + "\n", true, true, 0},
		{"truncated stream", `{"i":0,"t":"delta","text":"a","tokens":1}` + "\n", true, false, 1},
		{"truncated line", `{"i":0,"t":"delta"`, true, true, 0},
		{"malformed json", "{nope}\n", true, true, 0},
		{"line too long", `{"i":0,"t":"delta","text":"` + strings.Repeat("a", 5000) + `"}` + "\n", true, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", workers.ContentTypeNDJSON)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			opts := linkOptions()
			opts.MaxEventBytes = 4096
			c := workers.NewClient(srv.URL, opts)
			tasks := []task.Task{chatTask("r0")}
			if strings.HasPrefix(tc.name, "duplicate") {
				tasks = append(tasks, chatTask("r1"))
			}
			var mu sync.Mutex
			delivered := 0
			err := c.Run(context.Background(), &task.Batch{ID: "b", Tasks: tasks}, func(task.Event) {
				mu.Lock()
				delivered++
				mu.Unlock()
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && workers.Retryable(err) != tc.retryable {
				t.Errorf("Retryable = %v, want %v (%v)", workers.Retryable(err), tc.retryable, err)
			}
			if delivered != tc.delivered {
				t.Errorf("delivered %d events, want %d", delivered, tc.delivered)
			}
		})
	}
}

func FuzzClientStream(f *testing.F) {
	f.Add(validDone + "\n")
	f.Add(`{"i":0,"t":"delta","text":"a","tokens":1}` + "\n")
	f.Add(`{"i":3,"t":"error","error":{"message":"x"}}` + "\n")
	f.Fuzz(func(t *testing.T, body string) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", workers.ContentTypeNDJSON)
			io.WriteString(w, body)
		}))
		defer srv.Close()
		b := &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0"), chatTask("r1")}}
		ended := map[int]bool{}
		err := workers.NewClient(srv.URL, workers.ClientOptions{MaxEventBytes: 1 << 12}).Run(context.Background(), b, func(ev task.Event) {
			if ev.Index < 0 || ev.Index > 1 || ended[ev.Index] {
				t.Fatalf("invalid event delivered: %+v", ev)
			}
			if ev.Type != task.EventDelta {
				ended[ev.Index] = true
			}
		})
		if err == nil && len(ended) != 2 {
			t.Fatalf("Run returned nil with %d of 2 tasks ended", len(ended))
		}
	})
}

// BenchmarkLinkRoundTrip measures one chat task of 64 tokens through the
// full worker link (Client → HTTP → Handler → Agent → simulator with no
// delays → NDJSON stream back), to compare with BenchmarkAgentDirect.
func BenchmarkLinkRoundTrip(b *testing.B) {
	e, _ := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
	a := workers.NewAgent(workers.AgentConfig{WorkerID: "w", Engine: e, MaxConcurrency: 256})
	srv := httptest.NewServer(workers.NewHandler(a, nil))
	defer srv.Close()
	c := workers.NewClient(srv.URL, workers.ClientOptions{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			n++
			tk := chatTask(fmt.Sprint(n))
			tk.MaxTokens = 64
			batch := &task.Batch{ID: fmt.Sprintf("b%p-%d", pb, n), Tasks: []task.Task{tk}}
			if err := c.Run(context.Background(), batch, func(task.Event) {}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAgentDirect is BenchmarkLinkRoundTrip without the HTTP link.
func BenchmarkAgentDirect(b *testing.B) {
	e, _ := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
	a := workers.NewAgent(workers.AgentConfig{WorkerID: "w", Engine: e, MaxConcurrency: 256})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			n++
			tk := chatTask(fmt.Sprint(n))
			tk.MaxTokens = 64
			batch := &task.Batch{ID: fmt.Sprintf("b%p-%d", pb, n), Tasks: []task.Task{tk}}
			if err := a.RunBatch(context.Background(), batch, func(task.Event) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestHandlerRefusesMalformed(t *testing.T) {
	h := workers.NewHandler(newAgent(t, simEngine(t)), nil, workers.WithMaxBatchBytes(1024))
	tests := []struct {
		name, path, body string
		status           int
	}{
		{"batch not json", workers.PathBatch, "{", http.StatusBadRequest},
		{"batch trailing data", workers.PathBatch, `{"id":"b","tasks":[]} x`, http.StatusBadRequest},
		{"batch wrong types", workers.PathBatch, `{"id":5}`, http.StatusBadRequest},
		{"batch too large", workers.PathBatch, `{"id":"` + strings.Repeat("a", 2000) + `"}`, http.StatusRequestEntityTooLarge},
		{"batch invalid", workers.PathBatch, `{"id":"b","tasks":[{"request_id":"r","kind":"chat","model":"m"}]}`, http.StatusBadRequest},
		{"cancel unknown field", workers.PathCancel, `{"batch_id":"b","index":0,"x":1}`, http.StatusBadRequest},
		{"cancel negative index", workers.PathCancel, `{"batch_id":"b","index":-1}`, http.StatusBadRequest},
		{"cancel unknown batch is fine", workers.PathCancel, `{"batch_id":"b","index":0}`, http.StatusNoContent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body)))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
		})
	}
}

func FuzzHandlerBatch(f *testing.F) {
	f.Add(`{"id":"b","tasks":[{"request_id":"r","kind":"chat","model":"sim-tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":3}]}`)
	f.Add(`{"id":"b","tasks":[{"request_id":"r","kind":"embedding","model":"sim-tiny","inputs":["a","b"]}]}`)
	f.Add(`{"id":"b","tasks":[{"request_id":"r","kind":"completion","model":"x","prompt":"p","stop":[""]}]}`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, body string) {
		e, _ := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
		h := workers.NewHandler(workers.NewAgent(workers.AgentConfig{WorkerID: "w", Engine: e}), nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, workers.PathBatch, strings.NewReader(body)))
		if rec.Code != http.StatusOK && (rec.Code < 400 || rec.Code > 599) {
			t.Fatalf("status %d", rec.Code)
		}
	})
}

func TestLinkAuth(t *testing.T) {
	var mu sync.Mutex
	token := ""
	current := func() string { mu.Lock(); defer mu.Unlock(); return token }
	srv := httptest.NewServer(workers.NewHandler(newAgent(t, simEngine(t)), nil, workers.WithLinkAuth(current)))
	defer srv.Close()
	batch := func() *task.Batch { return &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r")}} }
	tests := []struct {
		name, server, client string
		ok                   bool
	}{
		{"not registered yet", "", "", false},
		{"no client token", "s3cret", "", false},
		{"wrong client token", "s3cret", "guess", false},
		{"matching token", "s3cret", "s3cret", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			token = tc.server
			mu.Unlock()
			opts := linkOptions()
			opts.Token = tc.client
			c := workers.NewClient(srv.URL, opts)
			err := c.Run(context.Background(), batch(), func(task.Event) {})
			if tc.ok != (err == nil) {
				t.Fatalf("Run: %v, want ok %v", err, tc.ok)
			}
			if err != nil && !workers.Retryable(err) {
				t.Errorf("a link auth refusal must be retryable elsewhere: %v", err)
			}
			if cerr := c.Cancel(context.Background(), "b", 0); (cerr == nil) != tc.ok {
				t.Errorf("Cancel: %v, want ok %v", cerr, tc.ok)
			}
		})
	}
}

// TestClientReusesConnections: batch after batch goes over one kept-alive
// connection. A client that closed each stream before its end would dial
// anew per batch (and, under load, pile up TIME_WAIT sockets).
func TestClientReusesConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(workers.NewHandler(newAgent(t, simEngine(t)), nil))
	var mu sync.Mutex
	conns := 0
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := workers.NewClient(srv.URL, linkOptions())
	for i := range 20 {
		b := &task.Batch{ID: fmt.Sprintf("b%d", i), Tasks: []task.Task{chatTask("r"), streamTask(chatTask("s"))}}
		if err := c.Run(context.Background(), b, func(task.Event) {}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("20 sequential batches opened %d connections, want 1", conns)
	}
}

// stepEngine emits one delta, then waits for release before finishing.
type stepEngine struct {
	*sim.Engine
	release chan struct{}
}

func (e *stepEngine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	if err := emit(task.Delta{Text: "first", Tokens: 1}); err != nil {
		return task.Result{}, err
	}
	select {
	case <-e.release:
	case <-ctx.Done():
		return task.Result{}, context.Cause(ctx)
	}
	if err := emit(task.Delta{Text: " second", Tokens: 1}); err != nil {
		return task.Result{}, err
	}
	return task.Result{FinishReason: "stop", PromptTokens: 1, CompletionTokens: 2}, nil
}

// TestStreamedEventsAreNotHeldBack: the worker flushes a streamed task's
// event while the task is still running; coalescing never waits for
// company. (The engine only finishes once the gateway has the first delta,
// so holding it back would hang the test.)
func TestStreamedEventsAreNotHeldBack(t *testing.T) {
	eng := &stepEngine{Engine: simEngine(t), release: make(chan struct{})}
	c := serveAgent(t, newAgent(t, eng))
	tk := streamTask(chatTask("r0"))
	var mu sync.Mutex
	var text string
	done := make(chan error, 1)
	go func() {
		done <- c.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) {
			mu.Lock()
			defer mu.Unlock()
			if ev.Type == task.EventDelta {
				if text == "" {
					close(eng.release)
				}
				text += ev.Text
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("the first delta never reached the gateway while its task ran")
	}
	if text != "first second" {
		t.Errorf("text %q", text)
	}
}

// TestHandlerErrorsAreOpenAIShaped: every error the worker link answers,
// including a wrong method and an unknown path, is an OpenAI error body
// ({"error":{"message","type","param","code"}}, param and code null when
// empty, nothing else), and a wrong method on a known route is 405 with Allow.
func TestHandlerErrorsAreOpenAIShaped(t *testing.T) {
	h := workers.NewHandler(newAgent(t, simEngine(t)), nil,
		workers.WithLinkAuth(func() string { return "s3cret" }),
		workers.WithRoute("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	tests := []struct {
		name, method, path, body, token string
		status                          int
		allow                           string
	}{
		{"GET on batch", http.MethodGet, workers.PathBatch, "", "s3cret", http.StatusMethodNotAllowed, "POST"},
		{"GET on cancel", http.MethodGet, workers.PathCancel, "", "", http.StatusMethodNotAllowed, "POST"},
		{"DELETE on batch", http.MethodDelete, workers.PathBatch, "", "", http.StatusMethodNotAllowed, "POST"},
		{"POST on metrics", http.MethodPost, "/metrics", "", "", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"unknown path", http.MethodPost, "/v1/worker/nope", "", "", http.StatusNotFound, ""},
		{"no token", http.MethodPost, workers.PathBatch, `{}`, "", http.StatusUnauthorized, ""},
		{"bad json", http.MethodPost, workers.PathBatch, "{", "s3cret", http.StatusBadRequest, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var body map[string]map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body) != 1 {
				t.Fatalf("body %q is not one OpenAI error envelope: %v", rec.Body, err)
			}
			e := body["error"]
			var keys []string
			for k := range e {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if diff := cmp.Diff(keys, []string{"code", "message", "param", "type"}); diff != "" {
				t.Errorf("error keys (-got +want):\n%s", diff)
			}
		})
	}
}
