package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func TestRegistry(t *testing.T) {
	h := newHarness(t, Config{})
	h.add("w1", 4)
	h.add("w2", 4, testModel, "other")

	if err := h.s.Heartbeat(&task.Heartbeat{WorkerID: "nobody"}); err == nil {
		t.Fatal("heartbeat of an unknown worker: want an error so it registers again")
	} else if st, _ := status(err); st != http.StatusNotFound {
		t.Fatalf("unknown worker heartbeat status = %d", st)
	}

	names := func() []string {
		var out []string
		for _, m := range h.s.Models() {
			out = append(out, m.Name)
		}
		return out
	}
	if d := cmp.Diff(names(), []string{testModel, "other"}); d != "" {
		t.Errorf("Models (-got +want):\n%s", d)
	}

	// w1 keeps beating; w2 goes silent past the 3 s timeout.
	h.clk.Advance(2 * time.Second)
	h.beat("w1", task.Load{})
	h.clk.Advance(1500 * time.Millisecond)
	healthy := map[string]bool{}
	for _, w := range h.s.Workers() {
		healthy[w.WorkerID] = w.Healthy
	}
	if d := cmp.Diff(healthy, map[string]bool{"w1": true, "w2": false}); d != "" {
		t.Errorf("health (-got +want):\n%s", d)
	}
	if d := cmp.Diff(names(), []string{testModel}); d != "" {
		t.Errorf("Models after w2 went silent (-got +want):\n%s", d)
	}

	h.s.Upsert(&task.Registered{WorkerID: "w3", URL: "http://w3", SessionToken: "secret-token", Models: []task.ModelVersion{{Name: testModel}}})
	js, err := json.Marshal(h.s.Workers())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "secret-token") {
		t.Errorf("Workers() JSON leaks the session token: %s", js)
	}

	h.s.Remove("w1")
	if got := len(h.s.Workers()); got != 2 {
		t.Errorf("after Remove: %d workers, want 2", got)
	}
}

func TestDispatchStreamsEvents(t *testing.T) {
	h := newHarness(t, Config{})
	conn := h.add("w1", 4)
	done := make(chan error, 1)
	var got []task.Event
	go func() {
		done <- h.s.Dispatch(context.Background(), chat("r1"), func(ev task.Event) error {
			got = append(got, ev)
			return nil
		})
	}()
	waitFor(t, func() bool { return conn.tasks() == 1 })
	conn.finish(0)
	if err := <-done; err != nil {
		t.Fatalf("Dispatch = %v", err)
	}
	want := []task.Event{
		{Index: 0, Type: task.EventDelta, Text: "hi", Tokens: 1},
		{Index: 0, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 1}},
	}
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("events (-got +want):\n%s", d)
	}
	if st := h.s.Stats(); st.Placed != 1 || st.InFlight != 0 {
		t.Errorf("stats after one task: %+v", st)
	}
}

// waitFor waits for the Dispatch goroutine to reach the worker; it blocks
// on a channel-free condition only briefly (no timing is asserted).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAdmissionErrors(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(h *harness)
		task       func(h *harness) *task.Task
		wantStatus int
		wantCode   string
	}{
		{
			name:       "model nobody serves: 404",
			setup:      func(h *harness) { h.add("w1", 4) },
			task:       func(*harness) *task.Task { t := chat("r"); t.Model = "gpt-9"; return t },
			wantStatus: http.StatusNotFound, wantCode: CodeModelNotFound,
		},
		{
			name:       "no worker at all: 404",
			setup:      func(*harness) {},
			task:       func(*harness) *task.Task { return chat("r") },
			wantStatus: http.StatusNotFound, wantCode: CodeModelNotFound,
		},
		{
			name: "every worker silent: 503",
			setup: func(h *harness) {
				h.add("w1", 4)
				h.clk.Advance(4 * time.Second)
			},
			task:       func(*harness) *task.Task { return chat("r") },
			wantStatus: http.StatusServiceUnavailable, wantCode: CodeNoHealthyWorker,
		},
		{
			name: "every worker draining: 503",
			setup: func(h *harness) {
				h.add("w1", 4)
				_ = h.s.Heartbeat(&task.Heartbeat{WorkerID: "w1", Draining: true})
			},
			task:       func(*harness) *task.Task { return chat("r") },
			wantStatus: http.StatusServiceUnavailable, wantCode: CodeNoHealthyWorker,
		},
		{
			name: "interactive task whose deadline no worker can meet: 429",
			setup: func(h *harness) {
				h.add("w1", 4)
			},
			task: func(h *harness) *task.Task {
				t := chat("r")
				t.PromptTokensHint = 100_000 // 10 s of prefill at the prior speed
				t.Deadline = h.clk.Now().Add(time.Second)
				return t
			},
			wantStatus: http.StatusTooManyRequests, wantCode: CodeDeadlineUnmeetable,
		},
		{
			name:  "deadline already passed: 504",
			setup: func(h *harness) { h.add("w1", 4) },
			task: func(h *harness) *task.Task {
				t := chat("r")
				t.Deadline = h.clk.Now().Add(-time.Millisecond)
				return t
			},
			wantStatus: http.StatusGatewayTimeout, wantCode: CodeDeadlineExceeded,
		},
		{
			name: "every queue full: 429",
			setup: func(h *harness) {
				h.add("w1", 1)
				for i := 0; i < 2; i++ { // one in flight, one queued
					if _, _, err := h.submit(chat("fill")); err != nil {
						h.t.Fatal(err)
					}
				}
			},
			task:       func(*harness) *task.Task { return chat("r") },
			wantStatus: http.StatusTooManyRequests, wantCode: CodeOverloaded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{}
			if strings.Contains(tt.name, "queue full") {
				cfg.Batching.MaxQueue = 1
			}
			h := newHarness(t, cfg)
			tt.setup(h)
			_, _, err := h.submit(tt.task(h))
			st, code := status(err)
			if st != tt.wantStatus || code != tt.wantCode {
				t.Fatalf("Submit = %v; want %d %s", err, tt.wantStatus, tt.wantCode)
			}
			var e *apierr.Error
			if errors.As(err, &e) && e.Status == http.StatusTooManyRequests && e.RetryAfter <= 0 {
				t.Errorf("429 without Retry-After")
			}
		})
	}
}

func TestBatchClassQueuesThenTimesOut(t *testing.T) {
	h := newHarness(t, Config{})
	h.add("w1", 1)
	if _, _, err := h.submit(chat("busy")); err != nil { // takes the only slot
		t.Fatal(err)
	}
	tk := chat("batch")
	tk.Priority = task.PriorityBatch
	tk.PromptTokensHint = 100_000
	tk.Deadline = t0.Add(time.Second)
	r, _, err := h.submit(tk)
	if err != nil {
		t.Fatalf("batch-class task refused: %v (want it queued)", err)
	}
	h.clk.Advance(2 * time.Second)
	if st, code := status(r.err); !r.ended || st != http.StatusGatewayTimeout || code != CodeDeadlineExceeded {
		t.Fatalf("queued past its deadline: ended=%v err=%v; want 504", r.ended, r.err)
	}
	if st := h.s.Stats(); st.QueueLength != 0 || st.InFlight != 1 {
		t.Errorf("after expiry: queue %d in flight %d; want 0 and 1", st.QueueLength, st.InFlight)
	}
}

func TestRetryOnAnotherWorkerAndEject(t *testing.T) {
	h := newHarness(t, Config{Policy: PolicyRoundRobin})
	c1 := h.add("w1", 4)
	c2 := h.add("w2", 4)
	r, _, err := h.submit(chat("r1"))
	if err != nil {
		t.Fatal(err)
	}
	first, second := c1, c2
	if len(c1.runs) == 0 {
		first, second = c2, c1
	}
	first.runs[0].onEnd(errors.New("connection refused"))
	if len(second.runs) != 1 {
		t.Fatalf("not retried on the other worker")
	}
	second.finish(0)
	if !r.ended || r.err != nil || len(r.events) != 2 {
		t.Fatalf("retried task: ended=%v err=%v events=%d", r.ended, r.err, len(r.events))
	}
	ejected := 0
	for _, w := range h.s.Workers() {
		if w.EjectedUntil != nil {
			ejected++
			if got := w.EjectedUntil.Sub(t0); got != time.Second {
				t.Errorf("first ejection lasts %s, want 1s", got)
			}
		}
	}
	if ejected != 1 {
		t.Fatalf("%d workers ejected, want 1", ejected)
	}
	if st := h.s.Stats(); st.Retries != 1 || st.Ejections != 1 {
		t.Errorf("stats: %+v", st)
	}
}

func TestNoRetryAfterFirstByte(t *testing.T) {
	h := newHarness(t, Config{})
	c1 := h.add("w1", 4)
	h.add("w2", 4)
	h.s.Remove("w2")
	r, _, err := h.submit(chat("r1"))
	if err != nil {
		t.Fatal(err)
	}
	c1.runs[0].onEvent(task.Event{Index: 0, Type: task.EventDelta, Text: "x", Tokens: 1})
	c1.runs[0].onEnd(errors.New("broken pipe"))
	if st, _ := status(r.err); !r.ended || st != http.StatusServiceUnavailable {
		t.Fatalf("link failure after a byte: ended=%v err=%v; want 503, no retry", r.ended, r.err)
	}
}

func TestClientGoneCancelsOnWorker(t *testing.T) {
	h := newHarness(t, Config{})
	c1 := h.add("w1", 1)
	_, running, err := h.submit(chat("r1"))
	if err != nil {
		t.Fatal(err)
	}
	queued, _, err := h.submit(chat("r2"))
	if err != nil {
		t.Fatal(err)
	}
	_ = queued
	running.Cancel(context.Canceled)
	if d := cmp.Diff(c1.cancels, []string{c1.runs[0].batch.ID + "/0"}); d != "" {
		t.Errorf("cancels (-got +want):\n%s", d)
	}
	// The worker confirms; the slot frees and the queued task goes out.
	c1.runs[0].onEvent(task.Event{Index: 0, Type: task.EventFailed, Error: &task.EventError{Status: 499, Message: "cancelled"}})
	c1.runs[0].onEnd(nil)
	if len(c1.runs) != 2 {
		t.Fatalf("queued task not sent after the cancelled one freed its slot")
	}
	if w := h.s.Workers()[0]; w.EjectedUntil != nil {
		t.Errorf("a client cancellation ejected the worker")
	}
}

func TestBurstSpreadsBeforeHeartbeat(t *testing.T) {
	for _, policy := range []string{PolicyTollgate, PolicyLeastRequest, PolicyRoundRobin} {
		t.Run(policy, func(t *testing.T) {
			h := newHarness(t, Config{Policy: policy})
			conns := []*scriptConn{h.add("w1", 8), h.add("w2", 8), h.add("w3", 8), h.add("w4", 8)}
			for i := 0; i < 16; i++ {
				if _, _, err := h.submit(chat("same prompt")); err != nil {
					t.Fatal(err)
				}
			}
			// The same prompt 16 times: affinity may gather them, but the
			// load bound (1.25 × average) caps any one worker at 5.
			for i, c := range conns {
				if n := c.tasks(); n > 5 {
					t.Errorf("worker %d got %d of 16 tasks; want at most 5", i+1, n)
				}
			}
		})
	}
}

func TestPicksFasterWorkerOnceLearned(t *testing.T) {
	h := newHarness(t, Config{Scorers: []PluginConfig{{ScorerTTFT, 1}}})
	fast, slow := h.add("fast", 8), h.add("slow", 8)
	// Teach: the slow worker takes 10× longer to the first token.
	for i := 0; i < 20; i++ {
		for _, c := range []*scriptConn{fast, slow} {
			_ = c
		}
		_, _, _ = h.submit(chat("x"))
		_, _, _ = h.submit(chat("y"))
		for _, c := range []*scriptConn{fast, slow} {
			for len(c.runs) > 0 {
				r := c.runs[0]
				c.runs = c.runs[1:]
				if c == slow {
					h.clk.Advance(200 * time.Millisecond)
				} else {
					h.clk.Advance(20 * time.Millisecond)
				}
				r.onEvent(task.Event{Index: 0, Type: task.EventDelta, Tokens: 1})
				r.onEvent(task.Event{Index: 0, Type: task.EventDone, Usage: &task.Usage{PromptTokens: 10, CompletionTokens: 1}})
				r.onEnd(nil)
			}
		}
	}
	fast.runs, slow.runs = nil, nil
	for i := 0; i < 4; i++ {
		_, _, _ = h.submit(chat("z"))
	}
	if fast.tasks() != 4 {
		t.Errorf("fast worker got %d of 4 light tasks after learning; want all", fast.tasks())
	}
}

func TestEmbeddingsShareAFrame(t *testing.T) {
	h := newHarness(t, Config{})
	c := h.add("w1", 1)
	_, _, _ = h.submit(chat("busy"))
	for _, id := range []string{"e1", "e2", "e3"} {
		tk := &task.Task{RequestID: id, Kind: task.KindEmbedding, Model: testModel, Inputs: []string{id}}
		if _, _, err := h.submit(tk); err != nil {
			t.Fatal(err)
		}
	}
	c.finish(0)
	if len(c.runs) != 2 || len(c.runs[1].batch.Tasks) != 3 {
		t.Fatalf("embedding tasks queued while busy: want one frame of 3, got %d runs", len(c.runs))
	}
	if st := h.s.Stats(); st.BatchSize.Max != 3 {
		t.Errorf("batch size max = %v", st.BatchSize.Max)
	}
}

func TestEjectionBackoff(t *testing.T) {
	h := newHarness(t, Config{EjectBase: time.Second, EjectMax: 10 * time.Second})
	h.add("w1", 4)
	c := h.s.workers["w1"]
	var got []time.Duration
	for i := 0; i < 6; i++ {
		h.s.mu.Lock()
		h.s.ejectLocked(c, t0, "test")
		got = append(got, c.ejectedUntil.Sub(t0))
		h.s.mu.Unlock()
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if d := cmp.Diff(got, want); d != "" {
		t.Errorf("back-off (-got +want):\n%s", d)
	}
	// A task that succeeds resets the count.
	h.clk.Advance(11 * time.Second)
	h.beat("w1", task.Load{})
	r, _, err := h.submit(chat("ok"))
	if err != nil {
		t.Fatal(err)
	}
	h.conns["http://w1"].finish(0)
	if !r.ended || r.err != nil || c.failures != 0 {
		t.Errorf("after a success: ended=%v err=%v failures=%d", r.ended, r.err, c.failures)
	}
}

// TestLearningByStream: a streamed task teaches TTFT at its first event and
// ITL at its end; an unstreamed one (whose text comes in one delta at the
// end) teaches only TTFT, as its whole time less (n−1) × the current ITL.
func TestLearningByStream(t *testing.T) {
	const tokens = 11
	tests := []struct {
		name     string
		stream   bool
		first    time.Duration                       // send → first event
		total    time.Duration                       // send → done
		wantTTFT func(itl, lf float64) time.Duration // what the model learns: unloaded
		wantITL  func(itl float64) float64
	}{
		{"streamed", true, 20 * time.Millisecond, 120 * time.Millisecond,
			func(_, lf float64) time.Duration { return time.Duration(float64(20*time.Millisecond) / lf) },
			func(float64) float64 { return 0.010 }},
		{"unstreamed", false, 400 * time.Millisecond, 400 * time.Millisecond,
			// The whole time, scaled to no load, less (n−1) unloaded ITLs.
			func(itl, lf float64) time.Duration {
				return time.Duration(float64(400*time.Millisecond)/lf - float64(tokens-1)*itl*float64(time.Second))
			},
			func(itl float64) float64 { return itl }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			c := h.add("w1", 8)
			tk := chat("x")
			tk.Stream = tc.stream
			if _, _, err := h.submit(tk); err != nil {
				t.Fatal(err)
			}
			cand := h.s.workers["w1"]
			h.s.mu.Lock()
			before := cand.latency
			h.s.mu.Unlock()
			lf := loadFactor(1, 8)
			alpha := h.s.cfg.EWMAAlpha
			want := before
			// A streamed task's first event carries no usage: the prompt
			// is the gateway's estimate then; the done event says 10.
			prompt := 10
			if tc.stream {
				prompt = estimatePromptTokens(tk)
			}
			ttft := tc.wantTTFT(before.interToken, lf)
			if ttft <= 0 {
				t.Fatal("test numbers leave no TTFT to learn")
			}
			want.observeTTFT(alpha, prompt, ttft)
			if tc.stream {
				want.observeITL(alpha, time.Duration(tc.wantITL(before.interToken)*float64(time.Second)/lf))
			}

			r := c.runs[0]
			if tc.stream {
				h.clk.Advance(tc.first)
				r.onEvent(task.Event{Index: 0, Type: task.EventDelta, Text: "a", Tokens: 1})
				h.clk.Advance(tc.total - tc.first)
				r.onEvent(task.Event{Index: 0, Type: task.EventDelta, Text: "bcdefghijk", Tokens: tokens - 1})
			} else {
				h.clk.Advance(tc.total)
				r.onEvent(task.Event{Index: 0, Type: task.EventDelta, Text: "abcdefghijk", Tokens: tokens})
			}
			r.onEvent(task.Event{Index: 0, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 10, CompletionTokens: tokens}})
			r.onEnd(nil)

			h.s.mu.Lock()
			got := cand.latency
			h.s.mu.Unlock()
			for _, f := range []struct {
				name      string
				got, want float64
			}{{"overhead", got.overhead, want.overhead}, {"perToken", got.perToken, want.perToken}, {"interToken", got.interToken, want.interToken}} {
				if math.Abs(f.got-f.want) > 1e-12 {
					t.Errorf("%s = %g, want %g", f.name, f.got, f.want)
				}
			}
		})
	}
}
