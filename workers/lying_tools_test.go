package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// toolWorker answers one tool task with the call get_weather({"city":"Paris"})
// streamed as OpenAI streams it (id and name first, then argument
// fragments), and a record over what it claims it sent. relay changes the
// deltas on the wire, record the output the record's digest covers.
func toolWorker(t *testing.T, relay func([]task.Event) []task.Event, record func(*task.Output)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b task.Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		tk := &b.Tasks[0]
		deltas := []task.Event{
			{Type: task.EventDelta, Tokens: 1, ToolCalls: []task.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "get_weather"}}},
			{Type: task.EventDelta, Tokens: 3, ToolCalls: []task.ToolCallDelta{{Index: 0, Arguments: `{"city":`}}},
			{Type: task.EventDelta, Tokens: 2, ToolCalls: []task.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}}},
		}
		out := task.NewOutput(1)
		for _, d := range deltas {
			out.Add(0, d.Text, d.ToolCalls)
		}
		if record != nil {
			record(out)
		}
		if relay != nil {
			deltas = relay(deltas)
		}
		rq, rs := tk.Digest(), out.Digest()
		done := task.Event{Type: task.EventDone, FinishReason: task.FinishToolCalls, Usage: &task.Usage{PromptTokens: 30, CompletionTokens: 6},
			Completion: &task.Completion{RequestID: tk.RequestID, WorkerID: "0xabc", Model: tk.Model, ModelDigest: testVersion.Digest,
				RequestDigest: fmt.Sprintf("%x", rq), ResponseDigest: fmt.Sprintf("%x", rs), Subject: tk.Subject,
				PromptTokens: 30, CompletionTokens: 6, Time: t0, FinishReason: task.FinishToolCalls}}
		w.Header().Set("Content-Type", workers.ContentTypeNDJSON)
		for _, ev := range append(deltas, done) {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "%s\n", b)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A worker that tells the client one tool call and records another, or
// streams tool-call pieces out of order, is refused before the done
// event reaches the client; the honest one passes with finish tool_calls.
func TestLyingWorkerToolCalls(t *testing.T) {
	cases := []struct {
		name   string
		relay  func([]task.Event) []task.Event
		record func(*task.Output)
		wantRe string // a RecordError check, "link" for a refused stream, "" honest
	}{
		{"honest", nil, nil, ""},
		{"records other arguments", nil, func(o *task.Output) { o.Choices[0].Calls[0].Function.Arguments = `{"city":"Lyon"}` }, workers.CheckResponse},
		{"relays other arguments", func(d []task.Event) []task.Event {
			d[2].ToolCalls = []task.ToolCallDelta{{Index: 0, Arguments: `"Lyon"}`}}
			return d
		}, nil, workers.CheckResponse},
		{"records another function", nil, func(o *task.Output) { o.Choices[0].Calls[0].Function.Name = "launch_missiles" }, workers.CheckResponse},
		{"records text instead of the call", nil, func(o *task.Output) {
			o.Choices[0].Text, o.Choices[0].Calls = []byte(`{"city":"Paris"}`), nil
		}, workers.CheckResponse},
		{"arguments before the call", func(d []task.Event) []task.Event { return []task.Event{d[1], d[0], d[2]} }, nil, "link"},
		{"a second choice", func(d []task.Event) []task.Event { d[2].Choice = 1; return d }, nil, "link"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := toolWorker(t, c.relay, c.record)
			cl := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{
				WorkerID: "0xabc", Models: []task.ModelVersion{testVersion}, Clock: clock.NewFake(t0)}})
			tk := chatTask("r0")
			tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather"}}}
			var done bool
			err := cl.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) {
				done = done || ev.Type == task.EventDone
			})
			switch c.wantRe {
			case "":
				if err != nil || !done {
					t.Fatalf("honest tool call refused: %v (done %v)", err, done)
				}
				return
			case "link":
				if err == nil {
					t.Fatal("out-of-order tool call pieces accepted")
				}
			default:
				var re *workers.RecordError
				if !errors.As(err, &re) || re.Check != c.wantRe {
					t.Fatalf("err = %v, want a record refused by %s", err, c.wantRe)
				}
			}
			if done {
				t.Error("the lying worker's done event was delivered")
			}
		})
	}
}
