package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

func nChoiceScript(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	for _, ev := range []task.Event{
		{Type: task.EventDelta, Choice: 0, Text: "Hello", Tokens: 1},
		{Type: task.EventDelta, Choice: 1, Text: "Howdy", Tokens: 1},
	} {
		if err := onEvent(ev); err != nil {
			return err
		}
	}
	return onEvent(task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 2},
		Completion: &task.Completion{RequestID: t.RequestID, Model: t.Model, Subject: t.Subject}})
}

// Streamed n>1: OpenAI opens every choice with delta.role "assistant";
// openai-node's ChatCompletionStream.finalChatCompletion() throws
// "missing role for choice 1" when a choice never carries one.
func TestRedteamStreamRolePerChoice(t *testing.T) {
	h := newHarness(t, func(c *Config, d *Deps) {})
	h.disp.script = nChoiceScript
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"n":2,"stream":true}`)
	body := readAll(t, resp)
	role := map[int]bool{}
	finish := map[int]bool{}
	for _, line := range strings.Split(body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Index        int
				Delta        struct{ Role string }
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		for _, ch := range c.Choices {
			role[ch.Index] = role[ch.Index] || ch.Delta.Role == "assistant"
			finish[ch.Index] = finish[ch.Index] || ch.FinishReason != nil
		}
	}
	for i := 0; i < 2; i++ {
		if !role[i] || !finish[i] {
			t.Errorf("choice %d: role %v finish %v\n%s", i, role[i], finish[i], body)
		}
	}
}

func rtToolScript(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	for _, ev := range []task.Event{
		{Type: task.EventDelta, Tokens: 1, ToolCalls: []task.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "get_weather"}}},
		{Type: task.EventDelta, Tokens: 2, ToolCalls: []task.ToolCallDelta{{Index: 0, Arguments: `{"city":`}}},
		{Type: task.EventDelta, Tokens: 2, ToolCalls: []task.ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}}},
	} {
		if err := onEvent(ev); err != nil {
			return err
		}
	}
	return onEvent(task.Event{Type: task.EventDone, FinishReason: task.FinishToolCalls, Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 5},
		Completion: &task.Completion{RequestID: t.RequestID, Model: t.Model, Subject: t.Subject}})
}

// Stream tool-call deltas as OpenAI sends them (SDK accumulators rely on
// it): the first piece carries index, id, type "function", function.name
// and arguments ""; later pieces only index and arguments; the choice
// ends with finish_reason "tool_calls". The JSON answer: content null,
// tool_calls whole, finish tool_calls.
func TestRedteamToolCallWire(t *testing.T) {
	h := newHarness(t, func(c *Config, d *Deps) {})
	h.disp.script = rtToolScript
	tools := `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],`+tools+`,"stream":true}`)
	body := readAll(t, resp)
	var pieces []map[string]any
	var finish []string
	for _, line := range strings.Split(body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					ToolCalls []map[string]any `json:"tool_calls"`
				}
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.Choices {
			pieces = append(pieces, ch.Delta.ToolCalls...)
			if ch.FinishReason != nil {
				finish = append(finish, *ch.FinishReason)
			}
		}
	}
	if len(pieces) != 3 {
		t.Fatalf("%d tool-call pieces:\n%s", len(pieces), body)
	}
	first := pieces[0]
	fn, _ := first["function"].(map[string]any)
	if first["id"] != "call_1" || first["type"] != "function" || first["index"] != float64(0) || fn["name"] != "get_weather" || fn["arguments"] != "" {
		t.Errorf("first piece %v", first)
	}
	for _, p := range pieces[1:] {
		if _, ok := p["id"]; ok {
			t.Errorf("later piece repeats id: %v", p)
		}
	}
	if len(finish) != 1 || finish[0] != "tool_calls" {
		t.Errorf("finish reasons %v", finish)
	}

	resp = h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}],`+tools+`}`)
	var c struct {
		Choices []struct {
			Message struct {
				Content   *string
				ToolCalls []struct {
					ID, Type string
					Function struct{ Name, Arguments string }
				} `json:"tool_calls"`
			}
			FinishReason string `json:"finish_reason"`
		}
	}
	b := readAll(t, resp)
	if err := json.Unmarshal([]byte(b), &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	ch := c.Choices[0]
	if ch.Message.Content != nil || len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || ch.FinishReason != "tool_calls" {
		t.Errorf("JSON answer %s", b)
	}
}
