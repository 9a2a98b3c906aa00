package responses

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// refusals are bodies that must be refused, with the param and code the
// client sees. Many are attacks: a second reading of the same bytes, or a
// field smuggled past validation.
var refusals = []struct {
	name, body, param, code string
}{
	{"empty body", ``, "", "invalid_json"},
	{"not an object", `[1]`, "", "invalid_json"},
	{"trailing data", `{"model":"m","input":"hi"} {}`, "", "invalid_json"},
	{"duplicate top-level key", `{"model":"m","input":"hi","model":"other"}`, "model", "invalid_json"},
	{"duplicate key by escape", `{"model":"m","input":"hi","mod\u0065l":"other"}`, "model", "invalid_json"},
	{"duplicate nested key", `{"model":"m","input":[{"role":"user","content":"a","content":"b"}]}`, "input[0].content", "invalid_json"},
	{"duplicate key in schema", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":{"type":"object","type":"string"}}]}`, "tools[0].parameters.type", "invalid_json"},
	{"wrong-case key", `{"Model":"m","input":"hi"}`, "Model", "unknown_parameter"},
	{"wrong-case nested key", `{"model":"m","input":[{"Role":"user","content":"a"}]}`, "input[0].Role", "unknown_parameter"},
	{"unknown field", `{"model":"m","input":"hi","seed":1}`, "seed", "unknown_parameter"},
	{"missing model", `{"input":"hi"}`, "model", "missing_required_parameter"},
	{"missing input", `{"model":"m"}`, "input", "missing_required_parameter"},
	{"empty input", `{"model":"m","input":[]}`, "input", "invalid_value"},
	{"input wrong type", `{"model":"m","input":5}`, "input", "invalid_type"},
	{"bad role", `{"model":"m","input":[{"role":"tool","content":"x"}]}`, "input[0].role", "invalid_role"},
	{"image in assistant", `{"model":"m","input":[{"role":"assistant","content":[{"type":"input_image","image_url":"https://x/y.png"}]}]}`, "input[0].content[0].type", "invalid_value"},
	{"output_text from user", `{"model":"m","input":[{"role":"user","content":[{"type":"output_text","text":"x"}]}]}`, "input[0].content[0].type", "invalid_value"},
	{"image file id", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}`, "input[0].content[0].file_id", "unsupported_parameter"},
	{"image javascript url", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"javascript:alert(1)"}]}]}`, "input[0].content[0].image_url", "invalid_value"},
	{"input file", `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`, "input[0].content[0].type", "unsupported_parameter"},
	{"item reference", `{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0].type", "unsupported_parameter"},
	{"unknown item type", `{"model":"m","input":[{"type":"mystery"}]}`, "input[0].type", "invalid_value"},
	{"function call without call_id", `{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "input[0].call_id", "missing_required_parameter"},
	{"function call smuggled field", `{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}","output":"x"}]}`, "input[0].output", "unknown_parameter"},
	{"output without call", `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":5}]}`, "input[0].output", "invalid_type"},
	{"hosted tool", `{"model":"m","input":"hi","tools":[{"type":"web_search"}]}`, "tools[0].type", "unsupported_parameter"},
	{"chat-shaped tool", `{"model":"m","input":"hi","tools":[{"type":"function","function":{"name":"f"}}]}`, "tools[0].function", "unknown_parameter"},
	{"tool without name", `{"model":"m","input":"hi","tools":[{"type":"function"}]}`, "tools[0].name", "missing_required_parameter"},
	{"tool bad name", `{"model":"m","input":"hi","tools":[{"type":"function","name":"a b"}]}`, "tools[0].name", "invalid_value"},
	{"tool twice", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f"},{"type":"function","name":"f"}]}`, "tools[1].name", "invalid_value"},
	{"tool parameters not object", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":[1]}]}`, "tools[0].parameters", "invalid_type"},
	{"tool_choice bad", `{"model":"m","input":"hi","tool_choice":"always"}`, "tool_choice", "invalid_value"},
	{"tool_choice required without tools", `{"model":"m","input":"hi","tool_choice":"required"}`, "tool_choice", "invalid_value"},
	{"tool_choice unknown function", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}`, "tool_choice.name", "invalid_value"},
	{"tool_choice hosted", `{"model":"m","input":"hi","tool_choice":{"type":"file_search"}}`, "tool_choice.type", "unsupported_parameter"},
	{"format unknown", `{"model":"m","input":"hi","text":{"format":{"type":"xml"}}}`, "text.format.type", "invalid_value"},
	{"json_schema without name", `{"model":"m","input":"hi","text":{"format":{"type":"json_schema","schema":{}}}}`, "text.format.name", "missing_required_parameter"},
	{"json_schema without schema", `{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"x"}}}`, "text.format.schema", "missing_required_parameter"},
	{"json_object with schema", `{"model":"m","input":"hi","text":{"format":{"type":"json_object","schema":{}}}}`, "text.format.schema", "unknown_parameter"},
	{"verbosity high", `{"model":"m","input":"hi","text":{"verbosity":"high"}}`, "text.verbosity", "unsupported_parameter"},
	{"max_output_tokens zero", `{"model":"m","input":"hi","max_output_tokens":0}`, "max_output_tokens", "invalid_value"},
	{"max_output_tokens huge", `{"model":"m","input":"hi","max_output_tokens":99999999}`, "max_output_tokens", "invalid_value"},
	{"max_output_tokens fraction", `{"model":"m","input":"hi","max_output_tokens":1.5}`, "max_output_tokens", "invalid_type"},
	{"temperature high", `{"model":"m","input":"hi","temperature":2.5}`, "temperature", "invalid_value"},
	{"top_p zero", `{"model":"m","input":"hi","top_p":0}`, "top_p", "invalid_value"},
	{"stream not bool", `{"model":"m","input":"hi","stream":"yes"}`, "stream", "invalid_type"},
	{"metadata too many", `{"model":"m","input":"hi","metadata":{` + pairs(17) + `}}`, "metadata", "invalid_value"},
	{"metadata number", `{"model":"m","input":"hi","metadata":{"a":1}}`, "metadata", "invalid_type"},
	{"metadata long value", `{"model":"m","input":"hi","metadata":{"a":"` + strings.Repeat("v", 513) + `"}}`, "metadata", "invalid_value"},
	{"previous id not resp", `{"model":"m","input":"hi","previous_response_id":"../etc/passwd"}`, "previous_response_id", "invalid_value"},
	{"reasoning effort", `{"model":"m","input":"hi","reasoning":{"effort":"high"}}`, "reasoning.effort", "unsupported_parameter"},
	{"include logprobs", `{"model":"m","input":"hi","include":["message.output_text.logprobs"]}`, "include", "unsupported_parameter"},
	{"truncation auto", `{"model":"m","input":"hi","truncation":"auto"}`, "truncation", "unsupported_parameter"},
	{"background", `{"model":"m","input":"hi","background":true}`, "background", "unsupported_parameter"},
	{"max_tool_calls", `{"model":"m","input":"hi","max_tool_calls":3}`, "max_tool_calls", "unsupported_parameter"},
	{"prompt template", `{"model":"m","input":"hi","prompt":{"id":"pmpt_1"}}`, "prompt", "unsupported_parameter"},
	{"stream_options without stream", `{"model":"m","input":"hi","stream_options":{"include_obfuscation":false}}`, "stream_options", "invalid_value"},
	{"too deep", `{"model":"m","input":"hi","metadata":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "", "invalid_json"},
}

func pairs(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('a'+i)) + `":"v"`)
	}
	return b.String()
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body), openai.Limits{})
			var ae *apierr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want an *apierr.Error", err)
			}
			if ae.Status != 400 || ae.Param != tc.param || ae.Code != tc.code {
				t.Errorf("got %d param %q code %q (%s), want 400 %q %q", ae.Status, ae.Param, ae.Code, ae.Message, tc.param, tc.code)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want func(*Request)
	}{
		{"string input", `{"model":"m","input":"hi"}`, func(r *Request) {
			r.Input = []Item{{Type: ItemMessage, Role: "user", Content: "hi"}}
		}},
		{"harmless defaults", `{"model":"m","input":"hi","reasoning":{},"include":["reasoning.encrypted_content"],"truncation":"disabled","background":false,"service_tier":"auto","text":{"verbosity":"medium","format":{"type":"text"}},"top_logprobs":0,"store":false}`, func(r *Request) {
			r.Input = []Item{{Type: ItemMessage, Role: "user", Content: "hi"}}
			r.Store = false
		}},
		{"items and tools", `{"model":"m","instructions":"be brief","input":[
			{"role":"developer","content":"dev"},
			{"type":"message","role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
			{"id":"msg_1","type":"message","role":"assistant","status":"completed","content":[{"type":"output_text","text":"ok","annotations":[]}]},
			{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get","arguments":"{\"x\":1}","status":"completed"},
			{"type":"function_call_output","call_id":"call_1","output":"42"}],
			"tools":[{"type":"function","name":"get","description":"gets","parameters":{"type":"object", "properties":{}},"strict":true}],
			"tool_choice":{"type":"function","name":"get"},"parallel_tool_calls":false,
			"text":{"format":{"type":"json_schema","name":"out","schema":{"type":"object"},"strict":true}},
			"max_output_tokens":64,"temperature":0,"top_p":0.5,"stream":true,"metadata":{"a":"b"},"user":"u1"}`, func(r *Request) {
			r.Instructions = openai.Ptr("be brief")
			r.Input = []Item{
				{Type: ItemMessage, Role: "developer", Content: "dev"},
				{Type: ItemMessage, Role: "user", Content: "ab"},
				{Type: ItemMessage, Role: "assistant", Content: "ok"},
				{Type: ItemFunctionCall, CallID: "call_1", Name: "get", Arguments: `{"x":1}`},
				{Type: ItemFunctionCallOutput, CallID: "call_1", Output: "42"},
			}
			r.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get", Description: "gets",
				Parameters: json.RawMessage(`{"type":"object","properties":{}}`), Strict: openai.Ptr(true)}}}
			r.ToolChoice = &task.ToolChoice{Mode: "function", Name: "get"}
			r.ParallelToolCalls = openai.Ptr(false)
			r.Format = &task.ResponseFormat{Type: "json_schema", Name: "out", Schema: json.RawMessage(`{"type":"object"}`), Strict: true}
			r.MaxOutputTokens, r.Temperature, r.TopP = openai.Ptr(64), openai.Ptr(0.0), openai.Ptr(0.5)
			r.Stream, r.Metadata, r.User = true, map[string]string{"a": "b"}, "u1"
		}},
		{"image", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"what"},{"type":"input_image","image_url":"https://x/y.png","detail":"low"}]}]}`, func(r *Request) {
			r.Input = []Item{{Type: ItemMessage, Role: "user", Content: "what",
				Parts: json.RawMessage(`[{"text":"what","type":"text"},{"image_url":{"detail":"low","url":"https://x/y.png"},"type":"image_url"}]`)}}
		}},
		{"continuation without input", `{"model":"m","previous_response_id":"resp_abc"}`, func(r *Request) {
			r.PreviousResponseID = "resp_abc"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.body), openai.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			want := &Request{Model: "m", Store: true}
			tc.want(want)
			if d := cmp.Diff(got, want); d != "" {
				t.Errorf("(-got +want)\n%s", d)
			}
		})
	}
}

func TestTask(t *testing.T) {
	r, err := Parse([]byte(`{"model":"m","instructions":"sys","input":[
		{"type":"function_call_output","call_id":"call_1","output":"42"},
		{"role":"user","content":"and?"}],"tools":[{"type":"function","name":"get"}],"max_output_tokens":9}`), openai.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	history := []Item{
		{Type: ItemMessage, Role: "user", Content: "q"},
		{Type: ItemMessage, Role: "assistant", Content: "let me look"},
		{Type: ItemFunctionCall, CallID: "call_1", Name: "get", Arguments: "{}"},
		{Type: ItemFunctionCall, CallID: "call_2", Name: "get", Arguments: `{"y":2}`},
	}
	got, err := r.Task("req_1", r.Conversation(history))
	if err != nil {
		t.Fatal(err)
	}
	wantMsgs := []task.Message{
		{Role: "system", Content: "sys"},
		{Role: "user", Content: "q"},
		{Role: "assistant", Content: "let me look", ToolCalls: []task.ToolCall{
			{ID: "call_1", Type: "function", Function: task.FunctionCall{Name: "get", Arguments: "{}"}},
			{ID: "call_2", Type: "function", Function: task.FunctionCall{Name: "get", Arguments: `{"y":2}`}}}},
		{Role: "tool", ToolCallID: "call_1", Content: "42"},
		{Role: "user", Content: "and?"},
	}
	if d := cmp.Diff(got.Messages, wantMsgs); d != "" {
		t.Errorf("messages (-got +want)\n%s", d)
	}
	if got.Kind != task.KindChat || got.MaxTokens != 9 || got.Temperature != 1 || got.TopP != 1 || len(got.Tools) != 1 || got.RequestID != "req_1" {
		t.Errorf("task = %+v", got)
	}
	if needs := got.Needs(); len(needs) != 1 || needs[0] != task.CapTools {
		t.Errorf("needs = %v, want [tools]", needs)
	}

	// An output answering a call nobody made is refused: the attack of a
	// forged tool result the model never asked for.
	if _, err := r.Task("req_2", r.Conversation(nil)); err == nil || apierr.From(err).Param != "input" {
		t.Errorf("orphan function_call_output: err = %v, want 400 on input", err)
	}
	// The same call ID twice would make two tool results ambiguous.
	dup := append(history, Item{Type: ItemFunctionCall, CallID: "call_1", Name: "get", Arguments: "{}"})
	if _, err := r.Task("req_3", r.Conversation(dup)); err == nil {
		t.Error("duplicate call_id accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range refusals {
		f.Add([]byte(tc.body))
	}
	f.Add([]byte(`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"}]}],"tools":[{"type":"function","name":"f"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body, openai.Limits{})
		if err != nil {
			if ae := apierr.From(err); ae.Status != 400 {
				t.Fatalf("status %d for a bad body: %v", ae.Status, err)
			}
			return
		}
		if r.Model == "" {
			t.Fatal("accepted without a model")
		}
		if len(r.Input) == 0 && r.PreviousResponseID == "" {
			t.Fatal("accepted without input")
		}
		if t2, err := r.Task("req", r.Conversation(nil)); err == nil && len(t2.Messages) == 0 {
			t.Fatal("task without messages")
		}
	})
}
