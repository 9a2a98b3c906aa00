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
	t.Skip("redteam: BUG streamed n>1 sends the role chunk only for choice 0 (openai-node finalChatCompletion throws)")
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
