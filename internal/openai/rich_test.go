package openai

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

const userHi = `"messages":[{"role":"user","content":"hi"}]`

const weatherTool = `{"type":"function","function":{"name":"get_weather","description":"d","parameters":{ "type" : "object", "properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}`

// toolTurn is a history with an assistant call and its tool result.
const toolTurn = `"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}]`

var richCases = []errCase{
	{"ok tools", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":"auto","parallel_tool_calls":false}`, "", ""},
	{"ok named tool_choice", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}`, "", ""},
	{"ok tool turn", `{"model":"m",` + toolTurn + `,"tools":[` + weatherTool + `]}`, "", ""},
	{"ok tool_choice none without tools", `{"model":"m",` + userHi + `,"tool_choice":"none"}`, "", ""},
	{"ok json_schema", `{"model":"m",` + userHi + `,"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"},"strict":true}}}`, "", ""},
	{"ok image and audio", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}`, "", ""},
	{"ok refusal only", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"refusal":"no"}]}`, "", ""},
	{"tools not array", `{"model":"m",` + userHi + `,"tools":{}}`, "tools", CodeInvalidType},
	{"tools empty", `{"model":"m",` + userHi + `,"tools":[]}`, "tools", CodeInvalidValue},
	{"tool type", `{"model":"m",` + userHi + `,"tools":[{"type":"retrieval","function":{"name":"f"}}]}`, "tools[0].type", CodeInvalidValue},
	{"tool key case", `{"model":"m",` + userHi + `,"tools":[{"Type":"function","function":{"name":"f"}}]}`, "tools[0].Type", CodeUnknown},
	{"function key case", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"Name":"f"}}]}`, "tools[0].function.Name", CodeUnknown},
	{"tool name pattern", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"name":"rm -rf"}}]}`, "tools[0].function.name", CodeInvalidValue},
	{"tool name too long", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"name":"` + strings.Repeat("a", 65) + `"}}]}`, "tools[0].function.name", CodeInvalidValue},
	{"tool name twice", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]}`, "tools[1].function.name", CodeInvalidValue},
	{"parameters not object", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}`, "tools[0].function.parameters", CodeInvalidType},
	{"strict not bool", `{"model":"m",` + userHi + `,"tools":[{"type":"function","function":{"name":"f","strict":"yes"}}]}`, "tools[0].function.strict", CodeInvalidType},
	{"too many tools", `{"model":"m",` + userHi + `,"tools":[` + strings.Repeat(`{"type":"function","function":{"name":"f"}},`, MaxTools) + `{"type":"function","function":{"name":"g"}}]}`, "tools", CodeInvalidValue},
	{"tool_choice unknown mode", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":"always"}`, "tool_choice", CodeInvalidValue},
	{"tool_choice undeclared", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"launch"}}}`, "tool_choice", CodeInvalidValue},
	{"tool_choice without tools", `{"model":"m",` + userHi + `,"tool_choice":"required"}`, "tool_choice", CodeInvalidValue},
	{"tool_choice no name", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{}}}`, "tool_choice.function.name", CodeMissing},
	{"tool_choice extra key", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather","x":1}}}`, "tool_choice.function.x", CodeUnknown},
	{"parallel not bool", `{"model":"m",` + userHi + `,"parallel_tool_calls":"yes"}`, "parallel_tool_calls", CodeInvalidType},
	{"tool message answers nothing", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"call_9","content":"r"}]}`, "messages[1].tool_call_id", CodeInvalidValue},
	{"tool message before its call", `{"model":"m","messages":[{"role":"tool","tool_call_id":"call_1","content":"r"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_call_id", CodeInvalidValue},
	{"tool message without content", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c"}]}`, "messages[1].content", CodeMissing},
	{"tool_call_id on user", `{"model":"m","messages":[{"role":"user","content":"x","tool_call_id":"c"}]}`, "messages[0].tool_call_id", CodeUnknown},
	{"tool_calls on user", `{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}]}`, "messages[0].tool_calls", CodeUnknown},
	{"assistant null content no calls", `{"model":"m","messages":[{"role":"assistant","content":null}]}`, "messages[0].content", CodeMissing},
	{"tool call arguments not string", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]}`, "messages[0].tool_calls[0].function.arguments", CodeInvalidType},
	{"tool call bad name", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"a b","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].function.name", CodeInvalidValue},
	{"tool call empty id", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].id", CodeInvalidValue},
	{"response_format unknown type", `{"model":"m",` + userHi + `,"response_format":{"type":"xml"}}`, "response_format.type", CodeInvalidValue},
	{"response_format no type", `{"model":"m",` + userHi + `,"response_format":{}}`, "response_format.type", CodeMissing},
	{"json_schema missing", `{"model":"m",` + userHi + `,"response_format":{"type":"json_schema"}}`, "response_format.json_schema", CodeMissing},
	{"json_schema bad name", `{"model":"m",` + userHi + `,"response_format":{"type":"json_schema","json_schema":{"name":"a.b","schema":{}}}}`, "response_format.json_schema.name", CodeInvalidValue},
	{"json_schema schema not object", `{"model":"m",` + userHi + `,"response_format":{"type":"json_schema","json_schema":{"name":"a","schema":"{}"}}}`, "response_format.json_schema.schema", CodeInvalidType},
	{"json_schema key case", `{"model":"m",` + userHi + `,"response_format":{"type":"json_schema","json_schema":{"Name":"a"}}}`, "response_format.json_schema.Name", CodeUnknown},
	{"json_schema with json_object", `{"model":"m",` + userHi + `,"response_format":{"type":"json_object","json_schema":{"name":"a"}}}`, "response_format.json_schema", CodeInvalidValue},
	{"top_logprobs without logprobs", `{"model":"m",` + userHi + `,"top_logprobs":3}`, "top_logprobs", CodeInvalidValue},
	{"top_logprobs 21", `{"model":"m",` + userHi + `,"logprobs":true,"top_logprobs":21}`, "top_logprobs", CodeInvalidValue},
	{"top_logprobs negative", `{"model":"m",` + userHi + `,"logprobs":true,"top_logprobs":-1}`, "top_logprobs", CodeInvalidValue},
	{"logprobs not bool", `{"model":"m",` + userHi + `,"logprobs":1}`, "logprobs", CodeInvalidType},
	{"image in system", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]}`, "messages[0].content[0].type", CodeInvalidValue},
	{"image detail", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x","detail":"max"}}]}]}`, "messages[0].content[0].image_url.detail", CodeInvalidValue},
	{"image part with text key", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","text":"x","image_url":{"url":"https://x"}}]}]}`, "messages[0].content[0].text", CodeUnknown},
	{"audio not base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"!!","format":"wav"}}]}]}`, "messages[0].content[0].input_audio.data", CodeInvalidValue},
	{"audio format", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"ogg"}}]}]}`, "messages[0].content[0].input_audio.format", CodeInvalidValue},
	{"file part", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{}}]}]}`, "messages[0].content[0].file", CodeUnknown},
	{"part type unknown", `{"model":"m","messages":[{"role":"user","content":[{"type":"video"}]}]}`, "messages[0].content[0].type", CodeInvalidValue},
	{"part missing text", `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", CodeMissing},
}

func TestParseChatRich(t *testing.T) {
	for _, tc := range richCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseChat([]byte(tc.body), Limits{})
			checkErr(t, err, tc)
		})
	}
}

func TestChatTaskRich(t *testing.T) {
	body := `{"model":"m",` + toolTurn + `,"tools":[` + weatherTool + `],"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":true,"logprobs":true,"top_logprobs":2,"n":3,"response_format":{"type":"json_object"}}`
	r, err := ParseChat([]byte(body), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Task("req")
	yes, strict := true, true
	want := &task.Task{
		RequestID: "req", Kind: task.KindChat, Model: "m", Temperature: 1, TopP: 1,
		Messages: []task.Message{
			{Role: "user", Content: "weather?"},
			{Role: "assistant", ToolCalls: []task.ToolCall{{ID: "call_1", Type: "function", Function: task.FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}},
			{Role: "tool", Content: "sunny", ToolCallID: "call_1"},
		},
		Tools: []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather", Description: "d",
			Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`), Strict: &strict}}},
		ToolChoice:        &task.ToolChoice{Mode: "function", Name: "get_weather"},
		ParallelToolCalls: &yes,
		ResponseFormat:    &task.ResponseFormat{Type: task.FormatJSONObject},
		Logprobs:          true, TopLogprobs: 2, N: 3,
		PromptTokensHint: got.PromptTokensHint,
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("task (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(got.Needs(), []task.Capability{task.CapTools, task.CapJSONObject, task.CapLogprobs, task.CapN}); diff != "" {
		t.Errorf("needs (-got +want):\n%s", diff)
	}
}

// A request that spells the plain defaults (text format, n 1, logprobs
// false, tool_choice none without tools, text-only parts) maps to the
// plain task, so its digest is the one it always had.
func TestPlainDefaultsStayPlain(t *testing.T) {
	plain, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"user","content":"a\nb"}]}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	spelled, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"response_format":{"type":"text"},"n":1,"logprobs":false,"top_logprobs":0,"tool_choice":"none","parallel_tool_calls":true}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := plain.Task("r"), spelled.Task("r")
	if a.Digest() != b.Digest() || len(b.Needs()) != 0 {
		t.Errorf("spelled defaults changed the task: %+v vs %+v (needs %v)", a, b, b.Needs())
	}
}

func TestImagePartsKept(t *testing.T) {
	r, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"user","content":[ {"type":"text","text":"what"}, {"type":"image_url","image_url":{"url":"https://x/y.png"}} ]}]}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := r.Task("r").Messages[0]
	if m.Content != "what" || string(m.Parts) != `[{"type":"text","text":"what"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]` {
		t.Errorf("message = %+v (parts %s)", m, m.Parts)
	}
}

func FuzzParseChatRich(f *testing.F) {
	for _, tc := range richCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChat(body, Limits{})
		if err != nil {
			return
		}
		tk := r.Task("r")
		_ = tk.Digest()
		_ = tk.Needs()
		for _, tool := range tk.Tools {
			if !isToolName(tool.Function.Name) {
				t.Fatalf("accepted tool name %q", tool.Function.Name)
			}
		}
	})
}
