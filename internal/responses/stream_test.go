package responses

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func testBuilder(t *testing.T, body string) *Builder {
	t.Helper()
	r, err := Parse([]byte(body), openai.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(NewResponse(r, "resp_1", 1700000000))
	n := 0
	b.newID = func(prefix string) string { n++; return prefix + strconv.Itoa(n) }
	return b
}

func types(evs ...[]Event) []string {
	var out []string
	for _, es := range evs {
		for _, e := range es {
			out = append(out, e.Type)
		}
	}
	return out
}

// checkSequence asserts every event's data carries its own type and the
// next sequence number.
func checkSequence(t *testing.T, evs ...[]Event) {
	t.Helper()
	seq := 0
	for _, es := range evs {
		for _, e := range es {
			var head struct {
				Type string `json:"type"`
				Seq  int    `json:"sequence_number"`
			}
			if err := json.Unmarshal(e.Data, &head); err != nil {
				t.Fatal(err)
			}
			if head.Type != e.Type || head.Seq != seq {
				t.Errorf("event %d: type %q seq %d, want %q seq %d", seq, head.Type, head.Seq, e.Type, seq)
			}
			seq++
		}
	}
}

func TestBuilderText(t *testing.T) {
	b := testBuilder(t, `{"model":"m","input":"hi"}`)
	start := b.Start()
	d1 := b.Delta("Hel", nil)
	d2 := b.Delta("lo", nil)
	end := b.Done("stop", &task.Usage{PromptTokens: 3, CompletionTokens: 2})
	want := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta",
		"response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if d := cmp.Diff(types(start, d1, d2, end), want); d != "" {
		t.Errorf("order (-got +want)\n%s", d)
	}
	checkSequence(t, start, d1, d2, end)
	var delta map[string]any
	json.Unmarshal(d1[2].Data, &delta)
	if d := cmp.Diff(delta, map[string]any{"type": "response.output_text.delta", "sequence_number": 4.0, "item_id": "msg_1",
		"output_index": 0.0, "content_index": 0.0, "delta": "Hel", "logprobs": []any{}}); d != "" {
		t.Errorf("delta (-got +want)\n%s", d)
	}
	resp := b.Response()
	got, _ := json.Marshal(resp.Output)
	if string(got) != `[{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","text":"Hello","annotations":[],"logprobs":[]}],"role":"assistant"}]` {
		t.Errorf("output = %s", got)
	}
	if resp.Status != StatusCompleted || resp.Usage.TotalTokens != 5 || resp.IncompleteDetails != nil {
		t.Errorf("response = %+v", resp)
	}
	if !strings.Contains(string(start[0].Data), `"output":[]`) {
		t.Errorf("response.created output is not []: %s", start[0].Data)
	}
	// response.created shows the response as it was then: no output yet.
	var created struct {
		Response Response `json:"response"`
	}
	json.Unmarshal(start[0].Data, &created)
	if created.Response.Status != StatusInProgress || len(created.Response.Output) != 0 || created.Response.Usage != nil {
		t.Errorf("created = %+v", created.Response)
	}
}

func TestBuilderToolCalls(t *testing.T) {
	b := testBuilder(t, `{"model":"m","input":"hi","tools":[{"type":"function","name":"get"}]}`)
	start := b.Start()
	d1 := b.Delta("", []task.ToolCallDelta{{Index: 0, ID: "call_a", Type: "function", Name: "get", Arguments: `{"q":`}})
	d2 := b.Delta("", []task.ToolCallDelta{{Index: 0, Arguments: `1}`}, {Index: 1, ID: "call_b", Name: "get"}})
	end := b.Done(task.FinishToolCalls, &task.Usage{PromptTokens: 3, CompletionTokens: 9})
	want := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.delta", "response.output_item.added",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.function_call_arguments.done", "response.output_item.done", "response.completed"}
	if d := cmp.Diff(types(start, d1, d2, end), want); d != "" {
		t.Errorf("order (-got +want)\n%s", d)
	}
	checkSequence(t, start, d1, d2, end)
	got, _ := json.Marshal(b.Response().Output)
	if string(got) != `[{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"q\":1}","call_id":"call_a","name":"get"},{"id":"fc_2","type":"function_call","status":"completed","arguments":"","call_id":"call_b","name":"get"}]` {
		t.Errorf("output = %s", got)
	}
	// The calls become the next request's history.
	if d := cmp.Diff(OutputItems(b.Response().Output), []Item{
		{Type: ItemFunctionCall, CallID: "call_a", Name: "get", Arguments: `{"q":1}`},
		{Type: ItemFunctionCall, CallID: "call_b", Name: "get"}}); d != "" {
		t.Errorf("history (-got +want)\n%s", d)
	}
}

func TestBuilderIncompleteAndFailed(t *testing.T) {
	b := testBuilder(t, `{"model":"m","input":"hi","max_output_tokens":2}`)
	b.Start()
	b.Delta("ab", nil)
	end := b.Done("length", &task.Usage{PromptTokens: 1, CompletionTokens: 2})
	if last := end[len(end)-1]; last.Type != "response.incomplete" {
		t.Errorf("last event %s, want response.incomplete", last.Type)
	}
	r := b.Response()
	if r.Status != StatusIncomplete || r.IncompleteDetails == nil || r.IncompleteDetails.Reason != "max_output_tokens" || r.Output[0].Status != StatusIncomplete {
		t.Errorf("response = %+v", r)
	}

	f := testBuilder(t, `{"model":"m","input":"hi"}`)
	f.Start()
	evs := f.Fail(&apierr.Error{Status: 500, Type: apierr.TypeServer, Code: "worker_failed", Message: "boom"})
	if d := cmp.Diff(types(evs), []string{"error", "response.failed"}); d != "" {
		t.Errorf("(-got +want)\n%s", d)
	}
	var e map[string]any
	json.Unmarshal(evs[0].Data, &e)
	if e["code"] != "worker_failed" || e["message"] != "boom" || e["sequence_number"] != 2.0 {
		t.Errorf("error event = %v", e)
	}
	if f.Response().Status != StatusFailed || f.Response().Error.Code != "worker_failed" {
		t.Errorf("failed response = %+v", f.Response())
	}
}

func TestResponseEcho(t *testing.T) {
	b := testBuilder(t, `{"model":"m","input":"hi","instructions":"x","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],
		"tool_choice":"required","text":{"format":{"type":"json_schema","name":"n","schema":{"type":"object"}}},"store":false,"metadata":{"k":"v"},"temperature":0.2}`)
	b.Done("stop", &task.Usage{})
	got, _ := json.Marshal(b.Response())
	var m map[string]any
	json.Unmarshal(got, &m)
	for k, want := range map[string]any{
		"object": "response", "status": "completed", "instructions": "x", "tool_choice": "required", "store": false,
		"temperature": 0.2, "top_p": 1.0, "parallel_tool_calls": true, "previous_response_id": nil, "error": nil,
		"incomplete_details": nil, "max_output_tokens": nil, "truncation": "disabled",
	} {
		if d := cmp.Diff(m[k], want); d != "" {
			t.Errorf("%s (-got +want)\n%s", k, d)
		}
	}
	if d := cmp.Diff(m["text"], map[string]any{"format": map[string]any{"type": "json_schema", "name": "n", "schema": map[string]any{"type": "object"}, "strict": false}, "verbosity": "medium"}); d != "" {
		t.Errorf("text (-got +want)\n%s", d)
	}
	if d := cmp.Diff(m["tools"], []any{map[string]any{"type": "function", "name": "f", "description": nil, "parameters": map[string]any{"type": "object"}, "strict": nil}}); d != "" {
		t.Errorf("tools (-got +want)\n%s", d)
	}
	if d := cmp.Diff(m["usage"], map[string]any{"input_tokens": 0.0, "output_tokens": 0.0, "total_tokens": 0.0,
		"input_tokens_details": map[string]any{"cached_tokens": 0.0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0.0}}); d != "" {
		t.Errorf("usage (-got +want)\n%s", d)
	}
}
