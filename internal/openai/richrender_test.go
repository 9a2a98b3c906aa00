package openai

import (
	"encoding/json"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

func TestRichChatCompletionJSON(t *testing.T) {
	out := task.NewOutput(2)
	out.Add(0, "", []task.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "get_weather", Arguments: `{"city":`}})
	out.Add(0, "", []task.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}})
	out.Add(1, "It is sunny.", nil)
	lp := make([]Logprobs, 2)
	lp[1].Add(json.RawMessage(`{"content":[{"token":"It","logprob":-0.1,"bytes":[73,116],"top_logprobs":[]}]}`))
	c := NewRichChatCompletion("chatcmpl-1", 5, "m", out, lp, task.FinishToolCalls, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7})
	got, _ := json.Marshal(c)
	want := `{"id":"chatcmpl-1","object":"chat.completion","created":5,"model":"m","choices":[` +
		`{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":{"content":null,"refusal":null},"finish_reason":"tool_calls"},` +
		`{"index":1,"message":{"role":"assistant","content":"It is sunny.","refusal":null},"logprobs":{"content":[{"token":"It","logprob":-0.1,"bytes":[73,116],"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7},"system_fingerprint":null}`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// Streamed tool calls look as OpenAI sends them: the first piece of a call
// carries id, type, name and arguments "", later ones index and arguments.
func TestChunkToolCalls(t *testing.T) {
	first, _ := json.Marshal(NewChunkToolCalls([]task.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "f"}}))
	later, _ := json.Marshal(NewChunkToolCalls([]task.ToolCallDelta{{Index: 0, Arguments: `{"a":`}}))
	if string(first) != `[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]` ||
		string(later) != `[{"index":0,"function":{"arguments":"{\"a\":"}}]` {
		t.Errorf("first %s, later %s", first, later)
	}
}
