package openai

import (
	"encoding/json"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// NewChunkToolCalls converts a delta's tool-call pieces to OpenAI's
// stream form.
func NewChunkToolCalls(ds []task.ToolCallDelta) []ChunkToolCall {
	if len(ds) == 0 {
		return nil
	}
	out := make([]ChunkToolCall, len(ds))
	for i, d := range ds {
		c := ChunkToolCall{Index: d.Index, Function: ChunkFunction{Arguments: d.Arguments}}
		if d.ID != "" {
			c.ID, c.Type, c.Function.Name = d.ID, "function", d.Name
		}
		out[i] = c
	}
	return out
}

// Logprobs collects a choice's logprobs objects ({"content":[...]}) from
// its deltas into one.
type Logprobs struct {
	Content []json.RawMessage `json:"content"`
	Refusal []json.RawMessage `json:"refusal"`
}

// Add appends one delta's logprobs object; a malformed one is skipped (the
// upstream's, passed through).
func (l *Logprobs) Add(raw json.RawMessage) {
	var part Logprobs
	if json.Unmarshal(raw, &part) == nil {
		l.Content = append(l.Content, part.Content...)
		l.Refusal = append(l.Refusal, part.Refusal...)
	}
}

// ChoiceFinish is choice i's finish reason given the task's: a choice
// that called tools ended with tool_calls, one that did not with stop.
func ChoiceFinish(finish string, calls int) string {
	switch {
	case calls > 0 && finish != "length":
		return task.FinishToolCalls
	case finish == task.FinishToolCalls:
		return "stop"
	}
	return finish
}

// NewRichChatCompletion is the non-streamed answer of a task with tools,
// several choices or logprobs: every choice with its text (null when it
// only called tools) and tool calls, its logprobs when asked (lp nil
// otherwise), finish_reason tool_calls for a choice that called them.
func NewRichChatCompletion(id string, created int64, model string, out *task.Output, lp []Logprobs, finish string, u Usage) *ChatCompletion {
	c := &ChatCompletion{ID: id, Object: "chat.completion", Created: created, Model: model, Usage: u,
		Choices: make([]ChatChoice, len(out.Choices))}
	for i, ch := range out.Choices {
		msg := ResponseMessage{Role: "assistant", ToolCalls: ch.Calls}
		if len(ch.Calls) == 0 || len(ch.Text) > 0 {
			text := string(ch.Text)
			msg.Content = &text
		}
		cc := ChatChoice{Index: i, Message: msg, FinishReason: ChoiceFinish(finish, len(ch.Calls))}
		if lp != nil {
			cc.Logprobs, _ = json.Marshal(&lp[i]) // raw JSON pieces: cannot fail
		}
		c.Choices[i] = cc
	}
	return c
}
