package task

import (
	"encoding/json"
	"strings"
	"testing"
)

// A worker honestly reporting the prompt tokens of a request with a large
// tool schema must not be refused (and ejected) for claiming more than the
// messages' bytes allow: tools, tool calls and a response schema count.
func TestMaxPromptTokensCountsTools(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","properties":{"city":{"type":"string","description":"` + strings.Repeat("d", 2000) + `"}}}`)
	plain := &Task{Kind: KindChat, Messages: []Message{{Role: "user", Content: "hi"}}}
	tests := []struct {
		name string
		t    *Task
		min  int // the bound must be at least this
	}{
		{"plain", plain, 2 + 8 + 64},
		{"tools", &Task{Kind: KindChat, Messages: plain.Messages, Tools: []Tool{{Type: "function", Function: FunctionDef{Name: "weather", Parameters: schema}}}}, len(schema) + 2 + 16 + 64},
		{"tool history", &Task{Kind: KindChat, Messages: []Message{
			{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Type: "function", Function: FunctionCall{Name: "f", Arguments: strings.Repeat("a", 500)}}}},
			{Role: "tool", ToolCallID: "call_1", Content: "ok"}}}, 500},
		{"schema", &Task{Kind: KindChat, Messages: plain.Messages, ResponseFormat: &ResponseFormat{Type: FormatJSONSchema, Name: "n", Schema: schema}}, len(schema)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultUsageBounds.MaxPromptTokens(tc.t); got < tc.min {
				t.Errorf("bound %d, want at least %d", got, tc.min)
			}
		})
	}
	if got, want := DefaultUsageBounds.MaxPromptTokens(plain), 2+8+64; got != want {
		t.Errorf("plain task's bound changed: %d, want %d", got, want)
	}
}
