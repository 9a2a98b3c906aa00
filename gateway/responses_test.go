package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/internal/responses"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// newResponsesHarness is a gateway with an embedded response store.
func newResponsesHarness(t *testing.T) *harness {
	t.Helper()
	return newHarness(t, func(c *Config, d *Deps) {
		st, err := responses.OpenBolt(filepath.Join(t.TempDir(), "responses.db"), responses.Retention{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		d.Responses = st
	})
}

// sse is one server-sent event of a Responses stream.
type sse struct {
	event string
	data  map[string]any
}

func readResponseEvents(t *testing.T, r io.Reader) []sse {
	t.Helper()
	var out []sse
	var cur sse
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("data %q: %v", line, err)
			}
		case line == "" && cur.event != "":
			if cur.data["type"] != cur.event {
				t.Errorf("event line %q, data type %v", cur.event, cur.data["type"])
			}
			if got, want := cur.data["sequence_number"], float64(len(out)); got != want {
				t.Errorf("%s: sequence_number %v, want %v", cur.event, got, want)
			}
			out = append(out, cur)
			cur = sse{}
		}
	}
	return out
}

func eventTypes(evs []sse) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.event
	}
	return out
}

func decodeResponse(t *testing.T, body string) *responses.Response {
	t.Helper()
	var r responses.Response
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return &r
}

func TestResponsesJSON(t *testing.T) {
	h := newResponsesHarness(t)
	resp := h.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","input":"hi","instructions":"be kind","max_output_tokens":7,"metadata":{"a":"b"}}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if rc := resp.Header.Get(HeaderReceipt); !strings.HasPrefix(rc, "rcpt_") || !h.ledger.has(rc) {
		t.Errorf("receipt %q not recorded", rc)
	}
	r := decodeResponse(t, body)
	if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != "completed" || r.Model != "tiny" || r.CreatedAt != 1_700_000_000 {
		t.Errorf("envelope: %s", body)
	}
	if len(r.Output) != 1 || r.Output[0].Type != "message" || !strings.HasPrefix(r.Output[0].ID, "msg_") || r.Output[0].Content[0].Text != "Hello world" {
		t.Errorf("output: %s", body)
	}
	if d := cmp.Diff(*r.Usage, responses.Usage{InputTokens: 5, OutputTokens: 2, TotalTokens: 7}); d != "" {
		t.Errorf("usage (-got +want)\n%s", d)
	}
	if *r.Instructions != "be kind" || *r.MaxOutputTokens != 7 || r.Metadata["a"] != "b" || !r.Store {
		t.Errorf("echo: %s", body)
	}
	tk := h.disp.lastTask()
	want := []task.Message{{Role: "system", Content: "be kind"}, {Role: "user", Content: "hi"}}
	if d := cmp.Diff(tk.Messages, want); d != "" || tk.Kind != task.KindChat || tk.MaxTokens != 7 || tk.Subject != "key1" {
		t.Errorf("task %+v; messages (-got +want)\n%s", tk, d)
	}
}

func TestResponsesStream(t *testing.T) {
	h := newResponsesHarness(t)
	resp := h.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","input":"hi","stream":true}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if rc := resp.Header.Get(HeaderReceipt); !strings.HasPrefix(rc, "rcpt_") {
		t.Errorf("receipt header %q", rc)
	}
	evs := readResponseEvents(t, resp.Body)
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.completed"}
	if d := cmp.Diff(eventTypes(evs), want); d != "" {
		t.Fatalf("events (-got +want)\n%s", d)
	}
	if evs[4].data["delta"] != "Hello" || evs[5].data["delta"] != " world" || evs[6].data["text"] != "Hello world" {
		t.Errorf("text events: %v %v %v", evs[4].data, evs[5].data, evs[6].data)
	}
	final := evs[len(evs)-1].data["response"].(map[string]any)
	if final["status"] != "completed" || final["usage"].(map[string]any)["total_tokens"] != 7.0 {
		t.Errorf("final response: %v", final)
	}
	// Stored: the same response comes back by ID.
	id := final["id"].(string)
	got := h.do(t, "GET", "/v1/responses/"+id, testKey, "")
	if b := readAll(t, got); got.StatusCode != 200 || decodeResponse(t, b).Output[0].Content[0].Text != "Hello world" {
		t.Errorf("GET: %d %s", got.StatusCode, b)
	}
}

func toolScript(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	for _, d := range []task.ToolCallDelta{
		{Index: 0, ID: "call_w", Type: "function", Name: "weather", Arguments: `{"city":`},
		{Index: 0, Arguments: `"Oslo"}`},
	} {
		if err := onEvent(task.Event{Type: task.EventDelta, ToolCalls: []task.ToolCallDelta{d}, Tokens: 2}); err != nil {
			return err
		}
	}
	return onEvent(task.Event{Type: task.EventDone, FinishReason: task.FinishToolCalls, Usage: &task.Usage{PromptTokens: 9, CompletionTokens: 4},
		Completion: &task.Completion{RequestID: t.RequestID, Model: t.Model, Subject: t.Subject}})
}

const toolBody = `{"model":"tiny","input":"weather in Oslo?","tools":[{"type":"function","name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}],"tool_choice":"auto"`

func TestResponsesToolCalls(t *testing.T) {
	h := newResponsesHarness(t)
	h.disp.script = toolScript
	resp := h.do(t, "POST", "/v1/responses", testKey, toolBody+`}`)
	body := readAll(t, resp)
	r := decodeResponse(t, body)
	if len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].CallID != "call_w" || r.Output[0].Name != "weather" ||
		r.Output[0].Arguments != `{"city":"Oslo"}` || !strings.HasPrefix(r.Output[0].ID, "fc_") {
		t.Fatalf("output: %s", body)
	}
	tk := h.disp.lastTask()
	if len(tk.Tools) != 1 || tk.Tools[0].Function.Name != "weather" || tk.ToolChoice.Mode != "auto" {
		t.Errorf("task tools %+v choice %+v", tk.Tools, tk.ToolChoice)
	}

	// The client runs the tool and continues the conversation.
	h.disp.script = nil
	next := h.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","previous_response_id":"`+r.ID+`","input":[{"type":"function_call_output","call_id":"call_w","output":"sunny"},{"role":"user","content":"thanks"}]}`)
	nb := readAll(t, next)
	if next.StatusCode != 200 {
		t.Fatalf("continuation: %d %s", next.StatusCode, nb)
	}
	// Its input items are its own input only, newest first by default.
	nextID := decodeResponse(t, nb).ID
	items := h.do(t, "GET", "/v1/responses/"+nextID+"/input_items?limit=1", testKey, "")
	var page struct {
		Object  string           `json:"object"`
		Data    []map[string]any `json:"data"`
		HasMore bool             `json:"has_more"`
		LastID  string           `json:"last_id"`
	}
	json.Unmarshal([]byte(readAll(t, items)), &page)
	if page.Object != "list" || len(page.Data) != 1 || page.Data[0]["type"] != "message" || !page.HasMore {
		t.Errorf("first page %+v", page)
	}
	items = h.do(t, "GET", "/v1/responses/"+nextID+"/input_items?after="+page.LastID, testKey, "")
	json.Unmarshal([]byte(readAll(t, items)), &page)
	if len(page.Data) != 1 || page.Data[0]["type"] != "function_call_output" || page.Data[0]["output"] != "sunny" || page.HasMore {
		t.Errorf("second page %+v", page)
	}
	if o := h.do(t, "GET", "/v1/responses/"+nextID+"/input_items", "sk-batch", ""); o.StatusCode != 404 {
		t.Errorf("another key's input_items: %d", o.StatusCode)
	} else {
		readAll(t, o)
	}
	want := []task.Message{
		{Role: "user", Content: "weather in Oslo?"},
		{Role: "assistant", ToolCalls: []task.ToolCall{{ID: "call_w", Type: "function", Function: task.FunctionCall{Name: "weather", Arguments: `{"city":"Oslo"}`}}}},
		{Role: "tool", ToolCallID: "call_w", Content: "sunny"},
		{Role: "user", Content: "thanks"},
	}
	if d := cmp.Diff(h.disp.lastTask().Messages, want); d != "" {
		t.Errorf("continued messages (-got +want)\n%s", d)
	}

	// Streamed.
	h.disp.script = toolScript
	sresp := h.do(t, "POST", "/v1/responses", testKey, toolBody+`,"stream":true}`)
	defer sresp.Body.Close()
	evs := readResponseEvents(t, sresp.Body)
	wantEv := []string{"response.created", "response.in_progress", "response.output_item.added",
		"response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done", "response.completed"}
	if d := cmp.Diff(eventTypes(evs), wantEv); d != "" {
		t.Fatalf("events (-got +want)\n%s", d)
	}
	if evs[5].data["arguments"] != `{"city":"Oslo"}` {
		t.Errorf("arguments.done = %v", evs[5].data)
	}
}

// Another key must not read, delete or continue a response: each gets
// the 404 of an unknown ID (never 403: IDs do not leak).
func TestResponsesOtherKey(t *testing.T) {
	h := newResponsesHarness(t)
	resp := h.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","input":"my secret"}`)
	id := decodeResponse(t, readAll(t, resp)).ID

	for _, tc := range []struct {
		name, method, path, body, param string
	}{
		{"get", "GET", "/v1/responses/" + id, "", ""},
		{"delete", "DELETE", "/v1/responses/" + id, "", ""},
		{"previous_response_id", "POST", "/v1/responses", `{"model":"tiny","previous_response_id":"` + id + `","input":"what did I say?"}`, "previous_response_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, tc.method, tc.path, "sk-batch", tc.body)
			b := readAll(t, r)
			var env struct{ Error map[string]any }
			json.Unmarshal([]byte(b), &env)
			if r.StatusCode != 404 || env.Error["code"] != "response_not_found" || strings.Contains(b, "secret") {
				t.Errorf("%d %s, want 404 response_not_found", r.StatusCode, b)
			}
			if tc.param != "" && env.Error["param"] != tc.param {
				t.Errorf("param %v, want %s", env.Error["param"], tc.param)
			}
		})
	}
	h.disp.mu.Lock()
	dispatched := len(h.disp.tasks)
	h.disp.mu.Unlock()
	if dispatched != 1 {
		t.Errorf("%d tasks dispatched, want only the owner's: another key's continuation ran", dispatched)
	}
	// The owner still has it, and deletes it.
	if r := h.do(t, "GET", "/v1/responses/"+id, testKey, ""); r.StatusCode != 200 {
		t.Errorf("owner GET after the attacks: %d %s", r.StatusCode, readAll(t, r))
	} else {
		readAll(t, r)
	}
	del := h.do(t, "DELETE", "/v1/responses/"+id, testKey, "")
	if b := readAll(t, del); del.StatusCode != 200 || b != `{"deleted":true,"id":"`+id+`","object":"response"}` {
		t.Errorf("DELETE: %d %s", del.StatusCode, b)
	}
	if r := h.do(t, "GET", "/v1/responses/"+id, testKey, ""); r.StatusCode != 404 {
		t.Errorf("GET after DELETE: %d", r.StatusCode)
	} else {
		readAll(t, r)
	}
}

func TestResponsesErrors(t *testing.T) {
	h := newResponsesHarness(t)
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		switch tk.Model {
		case "midfail":
			if err := onEvent(task.Event{Type: task.EventDelta, Text: "Hel", Tokens: 1}); err != nil {
				return err
			}
			return onEvent(task.Event{Type: task.EventFailed, Error: &task.EventError{Status: 502, Type: apierr.TypeServer, Code: "worker_failed", Message: "the worker failed"}})
		case "long":
			if err := onEvent(task.Event{Type: task.EventDelta, Text: "Hello", Tokens: 2}); err != nil {
				return err
			}
			return onEvent(task.Event{Type: task.EventDone, FinishReason: "length", Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 2},
				Completion: &task.Completion{RequestID: tk.RequestID, Model: tk.Model, Subject: tk.Subject}})
		}
		return echoScript(ctx, tk, onEvent)
	}
	for _, tc := range []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"duplicate key", "POST", "/v1/responses", testKey, `{"model":"tiny","input":"a","input":"b"}`, 400, "invalid_json"},
		{"wrong case", "POST", "/v1/responses", testKey, `{"model":"tiny","Input":"a"}`, 400, "unknown_parameter"},
		{"no key", "POST", "/v1/responses", "", `{"model":"tiny","input":"a"}`, 401, "missing_api_key"},
		{"unknown model", "POST", "/v1/responses", testKey, `{"model":"nope","input":"a"}`, 404, "model_not_found"},
		{"unknown previous", "POST", "/v1/responses", testKey, `{"model":"tiny","previous_response_id":"resp_nope","input":"a"}`, 404, "response_not_found"},
		{"unknown id", "GET", "/v1/responses/resp_nope", testKey, "", 404, "response_not_found"},
		{"unknown sub-route", "GET", "/v1/responses/resp_a/b", testKey, "", 404, "unknown_url"},
		{"input_items unknown id", "GET", "/v1/responses/resp_nope/input_items", testKey, "", 404, "response_not_found"},
		{"input_items bad limit", "GET", "/v1/responses/resp_nope/input_items?limit=0", testKey, "", 404, "response_not_found"},
		{"get needs key", "GET", "/v1/responses/resp_a", "", "", 401, "missing_api_key"},
		{"wrong method", "PUT", "/v1/responses", testKey, "", 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, tc.method, tc.path, tc.key, tc.body)
			b := readAll(t, r)
			if r.StatusCode != tc.status || !strings.Contains(b, `"code":"`+tc.code+`"`) {
				t.Errorf("%d %s, want %d %s", r.StatusCode, b, tc.status, tc.code)
			}
		})
	}

	// max_output_tokens reached: incomplete.
	r := h.do(t, "POST", "/v1/responses", testKey, `{"model":"long","input":"a","max_output_tokens":2}`)
	if got := decodeResponse(t, readAll(t, r)); got.Status != "incomplete" || got.IncompleteDetails == nil || got.IncompleteDetails.Reason != "max_output_tokens" {
		t.Errorf("incomplete: %+v", got)
	}

	// A failure after the first token: an error event, then response.failed.
	sr := h.do(t, "POST", "/v1/responses", testKey, `{"model":"midfail","input":"a","stream":true}`)
	defer sr.Body.Close()
	evs := readResponseEvents(t, sr.Body)
	types := eventTypes(evs)
	if len(types) < 2 || types[len(types)-2] != "error" || types[len(types)-1] != "response.failed" {
		t.Fatalf("events %v, want … error, response.failed", types)
	}
	if e := evs[len(evs)-2].data; e["code"] != "worker_failed" {
		t.Errorf("error event %v", e)
	}
	if f := evs[len(evs)-1].data["response"].(map[string]any); f["status"] != "failed" {
		t.Errorf("failed response %v", f)
	}
}

// store: false keeps nothing.
func TestResponsesNoStore(t *testing.T) {
	h := newResponsesHarness(t)
	r := decodeResponse(t, readAll(t, h.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","input":"a","store":false}`)))
	if r.Store {
		t.Error("store echoed true")
	}
	if g := h.do(t, "GET", "/v1/responses/"+r.ID, testKey, ""); g.StatusCode != 404 {
		t.Errorf("GET of an unstored response: %d", g.StatusCode)
	} else {
		readAll(t, g)
	}
}

// In the Redis mode two replicas share the store: a response created on
// one is read and continued on the other by its key, and by no other.
func TestResponsesSharedAcrossReplicas(t *testing.T) {
	r := redistest.New(t)
	st := responses.NewRedis(r.Client, r.Prefix+"responses:", responses.Retention{}, nil)
	replica := func() *harness {
		return newHarness(t, func(c *Config, d *Deps) { d.Responses = st })
	}
	a, b := replica(), replica()
	id := decodeResponse(t, readAll(t, a.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","input":"hi"}`))).ID
	if g := b.do(t, "GET", "/v1/responses/"+id, testKey, ""); g.StatusCode != 200 {
		t.Errorf("GET on the other replica: %d %s", g.StatusCode, readAll(t, g))
	} else {
		readAll(t, g)
	}
	if g := b.do(t, "GET", "/v1/responses/"+id, "sk-batch", ""); g.StatusCode != 404 {
		t.Errorf("another key on the other replica: %d", g.StatusCode)
	} else {
		readAll(t, g)
	}
	next := b.do(t, "POST", "/v1/responses", testKey, `{"model":"tiny","previous_response_id":"`+id+`","input":"more"}`)
	if body := readAll(t, next); next.StatusCode != 200 {
		t.Fatalf("continuation on the other replica: %d %s", next.StatusCode, body)
	}
	want := []task.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "Hello world"}, {Role: "user", Content: "more"}}
	if d := cmp.Diff(b.disp.lastTask().Messages, want); d != "" {
		t.Errorf("messages (-got +want)\n%s", d)
	}
}
