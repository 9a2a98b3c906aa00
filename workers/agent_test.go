package workers_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func simEngine(t *testing.T) *sim.Engine {
	t.Helper()
	e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], Seed: 1, NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// countingEngine counts Embed calls of the engine it wraps.
type countingEngine struct {
	task.Engine
	mu     sync.Mutex
	embeds int
}

func (c *countingEngine) Embed(ctx context.Context, model string, inputs []string) (task.EmbedResult, error) {
	c.mu.Lock()
	c.embeds++
	c.mu.Unlock()
	return c.Engine.Embed(ctx, model, inputs)
}

// blockingEngine generates nothing until its context ends; started
// receives each task's request ID once the engine holds it.
type blockingEngine struct {
	*sim.Engine
	started chan string
}

func (b *blockingEngine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	b.started <- t.RequestID
	<-ctx.Done()
	return task.Result{}, context.Cause(ctx)
}

func newAgent(t *testing.T, e task.Engine) *workers.Agent {
	t.Helper()
	return workers.NewAgent(workers.AgentConfig{WorkerID: "0xabc", Engine: e, MaxConcurrency: 4, Clock: clock.NewFake(t0)})
}

func chatTask(id string) task.Task {
	return task.Task{RequestID: id, Kind: task.KindChat, Model: "sim-tiny", Subject: "key_1",
		Messages: []task.Message{{Role: "user", Content: "hi " + id}}}
}

type collected struct {
	mu     sync.Mutex
	events map[int][]task.Event
}

func (c *collected) emit(ev task.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		c.events = map[int][]task.Event{}
	}
	c.events[ev.Index] = append(c.events[ev.Index], ev)
	return nil
}

// last checks that task i ended with exactly one terminal event, last.
func (c *collected) last(t *testing.T, i int) task.Event {
	t.Helper()
	evs := c.events[i]
	if len(evs) == 0 {
		t.Fatalf("task %d: no events", i)
	}
	for _, ev := range evs[:len(evs)-1] {
		if ev.Type != task.EventDelta {
			t.Fatalf("task %d: %q before its last event", i, ev.Type)
		}
	}
	return evs[len(evs)-1]
}

func TestRunBatch(t *testing.T) {
	eng := &countingEngine{Engine: simEngine(t)}
	a := newAgent(t, eng)
	b := &task.Batch{ID: "b1", Tasks: []task.Task{
		chatTask("r0"),
		{RequestID: "r1", Kind: task.KindCompletion, Model: "sim-tiny", Prompt: "Once", MaxTokens: 3},
		{RequestID: "r2", Kind: task.KindEmbedding, Model: "sim-tiny", Inputs: []string{"a b c", "d"}},
		{RequestID: "r3", Kind: task.KindEmbedding, Model: "sim-tiny", Inputs: []string{"e f"}},
		{RequestID: "r4", Kind: task.KindChat, Model: "nope", Messages: []task.Message{{Role: "user", Content: "x"}}},
	}}
	var c collected
	if err := a.RunBatch(context.Background(), b, c.emit); err != nil {
		t.Fatal(err)
	}
	if eng.embeds != 1 {
		t.Errorf("embedding tasks of one model took %d engine calls, want 1", eng.embeds)
	}
	model := simEngine(t).Models()[0]
	for i, tk := range b.Tasks[:4] {
		ev := c.last(t, i)
		if ev.Type != task.EventDone {
			t.Fatalf("task %d ended %q: %+v", i, ev.Type, ev.Error)
		}
		comp := ev.Completion
		reqDigest := tk.Digest()
		var text string
		for _, d := range c.events[i] {
			text += d.Text
		}
		respDigest := task.ResponseDigest(text, ev.Embeddings)
		switch {
		case comp.RequestID != tk.RequestID, comp.WorkerID != "0xabc", comp.Model != "sim-tiny", comp.Subject != "key_1" && i == 0:
			t.Errorf("task %d: completion identity %+v", i, comp)
		case comp.ModelDigest != model.Digest:
			t.Errorf("task %d: model digest %s, want %s", i, comp.ModelDigest, model.Digest)
		case comp.RequestDigest != hex.EncodeToString(reqDigest[:]):
			t.Errorf("task %d: request digest mismatch", i)
		case comp.ResponseDigest != hex.EncodeToString(respDigest[:]):
			t.Errorf("task %d: response digest mismatch", i)
		case comp.PromptTokens != ev.Usage.PromptTokens || comp.CompletionTokens != ev.Usage.CompletionTokens:
			t.Errorf("task %d: completion tokens disagree with usage", i)
		case !comp.Time.Equal(t0):
			t.Errorf("task %d: time %v, want the agent clock's %v", i, comp.Time, t0)
		}
		if got, ok := a.Produced(tk.RequestID); !ok || *got != *comp {
			t.Errorf("task %d: Produced = %+v, %v", i, got, ok)
		}
	}
	if ev := c.last(t, 1); ev.FinishReason != "length" || ev.Usage.CompletionTokens != 3 {
		t.Errorf("max_tokens 3: finish %q, %d tokens", ev.FinishReason, ev.Usage.CompletionTokens)
	}
	if got, want := c.last(t, 2).Usage.PromptTokens, sim.CountTokens("a b c")+sim.CountTokens("d"); got != want {
		t.Errorf("merged embedding task prompt tokens = %d, want %d", got, want)
	}
	if ev := c.last(t, 4); ev.Type != task.EventFailed || ev.Error.Status != http.StatusNotFound {
		t.Errorf("unknown model: %+v", ev)
	}
	if a.InFlight() != 0 {
		t.Errorf("in flight after batch: %d", a.InFlight())
	}
}

func TestRunBatchRefusals(t *testing.T) {
	tests := []struct {
		name   string
		batch  *task.Batch
		status int
	}{
		{"nil", nil, http.StatusBadRequest},
		{"no id", &task.Batch{Tasks: []task.Task{chatTask("r")}}, http.StatusBadRequest},
		{"no tasks", &task.Batch{ID: "b"}, http.StatusBadRequest},
		{"no request id", &task.Batch{ID: "b", Tasks: []task.Task{chatTask("")}}, http.StatusBadRequest},
		{"bad kind", &task.Batch{ID: "b", Tasks: []task.Task{{RequestID: "r", Kind: "image", Model: "m"}}}, http.StatusBadRequest},
		{"chat without messages", &task.Batch{ID: "b", Tasks: []task.Task{{RequestID: "r", Kind: task.KindChat, Model: "m"}}}, http.StatusBadRequest},
		{"embedding without inputs", &task.Batch{ID: "b", Tasks: []task.Task{{RequestID: "r", Kind: task.KindEmbedding, Model: "m"}}}, http.StatusBadRequest},
		{"negative max tokens", &task.Batch{ID: "b", Tasks: []task.Task{{RequestID: "r", Kind: task.KindCompletion, Model: "m", MaxTokens: -1}}}, http.StatusBadRequest},
		{"oversized traceparent", &task.Batch{ID: "b", Tasks: []task.Task{{RequestID: "r", Kind: task.KindCompletion, Model: "m", Traceparent: strings.Repeat("0", workers.MaxTraceparentLen+1)}}}, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t, simEngine(t))
			err := a.RunBatch(context.Background(), tc.batch, func(task.Event) error {
				t.Fatal("event emitted for a refused batch")
				return nil
			})
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
		})
	}
}

func TestCancelOneTask(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 2)}
	a := newAgent(t, eng)
	b := &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0"), chatTask("r1")}}
	var c collected
	done := make(chan error, 1)
	go func() { done <- a.RunBatch(context.Background(), b, c.emit) }()
	<-eng.started
	<-eng.started
	if a.InFlight() != 2 {
		t.Errorf("in flight = %d, want 2", a.InFlight())
	}
	a.Cancel("b", 0)
	a.Cancel("b", 1)
	a.Cancel("unknown", 7) // ignored
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ev := c.last(t, i); ev.Type != task.EventFailed || ev.Error.Code != workers.CodeCancelled {
			t.Errorf("task %d: %+v", i, ev)
		}
	}
}

func TestDeadline(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 1)}
	clk := clock.NewFake(t0)
	a := workers.NewAgent(workers.AgentConfig{WorkerID: "w", Engine: eng, Clock: clk})
	tk := chatTask("r0")
	tk.Deadline = t0.Add(time.Second)
	var c collected
	done := make(chan error, 1)
	go func() {
		done <- a.RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, c.emit)
	}()
	<-eng.started
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ev := c.last(t, 0); ev.Type != task.EventFailed || ev.Error.Status != http.StatusGatewayTimeout {
		t.Errorf("deadline: %+v", ev.Error)
	}
}

func TestEmitFailureCancelsBatch(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 2)}
	a := newAgent(t, eng)
	b := &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0"), {RequestID: "bad", Kind: task.KindChat, Model: "nope", Messages: []task.Message{{Role: "user", Content: "x"}}}}}
	gone := errors.New("gateway gone")
	err := a.RunBatch(context.Background(), b, func(task.Event) error { return gone })
	if !errors.Is(err, gone) {
		t.Fatalf("err = %v, want the emit error", err)
	}
	if a.InFlight() != 0 {
		t.Errorf("in flight = %d after a failed batch", a.InFlight())
	}
}

func TestDrain(t *testing.T) {
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 1)}
	a := newAgent(t, eng)
	var c collected
	done := make(chan error, 1)
	go func() {
		done <- a.RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0")}}, c.emit)
	}()
	<-eng.started
	// A drain whose context ends first reports what is left; the agent
	// stays draining.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Drain(ctx); err == nil {
		t.Error("Drain with a done context and a task in flight returned nil")
	}
	// New work is refused while draining.
	err := a.RunBatch(context.Background(), &task.Batch{ID: "b2", Tasks: []task.Task{chatTask("r1")}}, c.emit)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != workers.CodeWorkerDraining {
		t.Fatalf("batch while draining: %v", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- a.Drain(context.Background()) }()
	a.Cancel("b", 0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// scriptedEngine returns canned results, to check how the agent treats an
// engine that misbehaves.
type scriptedEngine struct {
	*sim.Engine
	delta  task.Delta
	result task.Result
	embed  task.EmbedResult
}

func (s *scriptedEngine) Generate(_ context.Context, _ *task.Task, emit func(task.Delta) error) (task.Result, error) {
	if err := emit(s.delta); err != nil {
		return task.Result{}, err
	}
	return s.result, nil
}

func (s *scriptedEngine) Embed(context.Context, string, []string) (task.EmbedResult, error) {
	return s.embed, nil
}

func TestMisbehavingEngine(t *testing.T) {
	nan := float32(math.NaN())
	ok := task.Result{FinishReason: "stop", PromptTokens: 1, CompletionTokens: 1}
	tests := []struct {
		name       string
		eng        scriptedEngine
		kind       task.Kind
		wantType   task.EventType
		wantFinish string
	}{
		{"other finish reason becomes stop", scriptedEngine{delta: task.Delta{Text: "a", Tokens: 1}, result: task.Result{FinishReason: "content_filter"}}, task.KindChat, task.EventDone, "stop"},
		{"negative delta tokens", scriptedEngine{delta: task.Delta{Text: "a", Tokens: -1}, result: ok}, task.KindChat, task.EventFailed, ""},
		{"negative usage", scriptedEngine{result: task.Result{CompletionTokens: -2}}, task.KindChat, task.EventFailed, ""},
		{"NaN embedding", scriptedEngine{embed: task.EmbedResult{Vectors: [][]float32{{nan}}}}, task.KindEmbedding, task.EventFailed, ""},
		{"too few vectors", scriptedEngine{embed: task.EmbedResult{}}, task.KindEmbedding, task.EventFailed, ""},
		{"negative embed tokens", scriptedEngine{embed: task.EmbedResult{Vectors: [][]float32{{1}}, PromptTokens: -1}}, task.KindEmbedding, task.EventFailed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eng := tc.eng
			eng.Engine = simEngine(t)
			tk := chatTask("r")
			if tc.kind == task.KindEmbedding {
				tk = task.Task{RequestID: "r", Kind: task.KindEmbedding, Model: "sim-tiny", Inputs: []string{"x"}}
			}
			var c collected
			if err := newAgent(t, &eng).RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, c.emit); err != nil {
				t.Fatal(err)
			}
			ev := c.last(t, 0)
			if ev.Type != tc.wantType || ev.FinishReason != tc.wantFinish {
				t.Fatalf("ended %q finish %q (%+v), want %q %q", ev.Type, ev.FinishReason, ev.Error, tc.wantType, tc.wantFinish)
			}
			if _, err := json.Marshal(ev); err != nil {
				t.Errorf("event cannot be sent: %v", err)
			}
		})
	}
}

func streamTask(t task.Task) task.Task {
	t.Stream = true
	return t
}

// TestRunBatchDeltasByStream: a streamed task gets its text delta by delta;
// one that is not gets the same text and token count in one delta before
// its done event.
func TestRunBatchDeltasByStream(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stream     bool
		wantDeltas func(n int) bool
	}{
		{"streamed", true, func(n int) bool { return n > 1 }},
		{"unstreamed", false, func(n int) bool { return n == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t, simEngine(t))
			tk := chatTask("r0")
			tk.MaxTokens, tk.Stream = 12, tc.stream
			var c collected
			if err := a.RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, c.emit); err != nil {
				t.Fatal(err)
			}
			done := c.last(t, 0)
			if done.Type != task.EventDone {
				t.Fatalf("ended %q: %+v", done.Type, done.Error)
			}
			deltas := c.events[0][:len(c.events[0])-1]
			if !tc.wantDeltas(len(deltas)) {
				t.Errorf("%d deltas", len(deltas))
			}
			var text string
			tokens := 0
			for _, d := range deltas {
				text += d.Text
				tokens += d.Tokens
			}
			if tokens != done.Usage.CompletionTokens {
				t.Errorf("deltas carry %d tokens, usage says %d", tokens, done.Usage.CompletionTokens)
			}
			if want := task.ResponseDigest(text, nil); done.Completion.ResponseDigest != hex.EncodeToString(want[:]) {
				t.Error("response digest does not match the delivered text")
			}
		})
	}
}
