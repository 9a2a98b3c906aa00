package openai

import (
	"encoding/json"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// The richer chat request as the upstream reads it: tools, tool_choice,
// parallel_tool_calls, response_format, logprobs, top_logprobs, n, and
// messages whose content is a parts array or null, with tool calls and
// tool results. A plain task sends none of it, and its messages as they
// always were.

// upstreamMessage is a chat message in OpenAI's form.
type upstreamMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"` // a string, a parts array, or null
	Name       string          `json:"name,omitempty"`
	ToolCalls  []task.ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// richMessages reports whether any message needs the OpenAI form (parts,
// tool calls, a tool result).
func richMessages(msgs []task.Message) bool {
	for i := range msgs {
		if len(msgs[i].Parts) > 0 || len(msgs[i].ToolCalls) > 0 || msgs[i].ToolCallID != "" {
			return true
		}
	}
	return false
}

// upstreamMessages converts msgs to OpenAI's form: parts as the client
// sent them, content null for an assistant turn that only called tools.
func upstreamMessages(msgs []task.Message) ([]upstreamMessage, error) {
	out := make([]upstreamMessage, len(msgs))
	for i, m := range msgs {
		um := upstreamMessage{Role: m.Role, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID}
		switch {
		case len(m.Parts) > 0:
			um.Content = m.Parts
		case m.Content == "" && len(m.ToolCalls) > 0:
			um.Content = json.RawMessage("null")
		default:
			b, err := json.Marshal(m.Content)
			if err != nil {
				return nil, err
			}
			um.Content = b
		}
		out[i] = um
	}
	return out, nil
}

// upstreamToolChoice is tool_choice in OpenAI's form.
func upstreamToolChoice(tc *task.ToolChoice) json.RawMessage {
	if tc == nil {
		return nil
	}
	if tc.Mode == "function" {
		b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
		return b
	}
	b, _ := json.Marshal(tc.Mode)
	return b
}

type upstreamJSONSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict bool            `json:"strict,omitempty"`
}

type upstreamResponseFormat struct {
	Type       string              `json:"type"`
	JSONSchema *upstreamJSONSchema `json:"json_schema,omitempty"`
}

func upstreamFormat(rf *task.ResponseFormat) *upstreamResponseFormat {
	if rf == nil {
		return nil
	}
	out := &upstreamResponseFormat{Type: rf.Type}
	if rf.Type == task.FormatJSONSchema {
		out.JSONSchema = &upstreamJSONSchema{Name: rf.Name, Schema: rf.Schema, Strict: rf.Strict}
	}
	return out
}

// applyRich fills req's richer members from t (messages are converted
// by Generate).
func applyRich(req *generateRequest, t *task.Task) {
	if len(t.Tools) > 0 {
		req.Tools, req.ToolChoice, req.ParallelToolCalls = t.Tools, upstreamToolChoice(t.ToolChoice), t.ParallelToolCalls
	}
	req.ResponseFormat = upstreamFormat(t.ResponseFormat)
	if t.Logprobs {
		req.Logprobs = true
		if t.TopLogprobs > 0 {
			n := t.TopLogprobs
			req.TopLogprobs = &n
		}
	}
	if t.N > 1 {
		req.N = t.N
	}
}

// upstreamToolCall is one piece of a tool call in an upstream answer: a
// whole call in a message, or a delta in a stream (with its index).
type upstreamToolCall struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// toolDeltas converts an upstream's tool-call pieces to deltas. For a
// whole message's calls (stream false) index is the position.
func toolDeltas(calls []upstreamToolCall) []task.ToolCallDelta {
	if len(calls) == 0 {
		return nil
	}
	out := make([]task.ToolCallDelta, len(calls))
	for i, c := range calls {
		idx := i
		if c.Index != nil {
			idx = *c.Index
		}
		out[i] = task.ToolCallDelta{Index: idx, ID: c.ID, Type: c.Type, Name: c.Function.Name, Arguments: c.Function.Arguments}
	}
	return out
}

// nullable reports whether raw carries a value (not absent, not null).
func nullable(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}
