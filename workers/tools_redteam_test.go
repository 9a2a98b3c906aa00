package workers_test

import (
	"context"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

func runToolTask(t *testing.T, tk task.Task, relay func([]task.Event) []task.Event, record func(*task.Output)) (bool, error) {
	srv := toolWorker(t, relay, record)
	cl := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{
		WorkerID: "0xabc", Models: []task.ModelVersion{testVersion}, Clock: clock.NewFake(t0)}})
	var done bool
	err := cl.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) {
		done = done || ev.Type == task.EventDone
	})
	return done, err
}

// A worker that consistently (wire and record agree) calls a function the
// client never declared must not reach the client as a valid answer.
func TestRedteamUndeclaredToolName(t *testing.T) {
	tk := chatTask("r0")
	tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather"}}}
	relay := func(d []task.Event) []task.Event { d[0].ToolCalls[0].Name = "launch_missiles"; return d }
	record := func(o *task.Output) { o.Choices[0].Calls[0].Function.Name = "launch_missiles" }
	done, err := runToolTask(t, tk, relay, record)
	if err == nil || done {
		t.Fatalf("undeclared function accepted (err %v, done %v)", err, done)
	}
}

// tool_choice "none": a worker that calls a tool anyway must be refused.
func TestRedteamToolChoiceNoneIgnored(t *testing.T) {
	tk := chatTask("r0")
	tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather"}}}
	tk.ToolChoice = &task.ToolChoice{Mode: "none"}
	done, err := runToolTask(t, tk, nil, nil)
	if err == nil || done {
		t.Fatalf("tool call under tool_choice none accepted (err %v, done %v)", err, done)
	}
}

// Honest case kept as a regression: the declared function passes.
func TestRedteamDeclaredToolPasses(t *testing.T) {
	tk := chatTask("r0")
	tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather"}}}
	if done, err := runToolTask(t, tk, nil, nil); err != nil || !done {
		t.Fatalf("honest refused: %v", err)
	}
}

// Duplicate tool-call ids in one choice (the client's tool messages are
// keyed by id) must be refused.
func TestRedteamDuplicateToolCallID(t *testing.T) {
	o := task.NewOutput(1)
	err := o.Add(0, "", []task.ToolCallDelta{{Index: 0, ID: "call_1", Name: "f"}, {Index: 1, ID: "call_1", Name: "f"}})
	if err == nil {
		t.Fatal("duplicate tool call id accepted")
	}
}

// A task that did not ask for logprobs gets none: a worker that attaches
// (uncovered, unverified) logprobs JSON to its deltas is refused.
func TestRedteamUnaskedLogprobs(t *testing.T) {
	tk := chatTask("r0")
	tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather"}}}
	relay := func(d []task.Event) []task.Event {
		d[1].Logprobs = []byte(`{"content":[{"token":"x","logprob":0,"injected":{"a":1}}]}`)
		return d
	}
	done, err := runToolTask(t, tk, relay, nil)
	if err == nil || done {
		t.Fatalf("unasked logprobs accepted (err %v, done %v)", err, done)
	}
}
