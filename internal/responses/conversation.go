package responses

import (
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Conversation is the items a request runs on: those of the response it
// continues (its conversation and its output), then its own input.
func (r *Request) Conversation(previous []Item) []Item {
	conv := make([]Item, 0, len(previous)+len(r.Input))
	conv = append(conv, previous...)
	return append(conv, r.Input...)
}

// Task translates the request, run on conv (Conversation), into a chat
// task. Instructions become the first (system) message; they are not
// carried over from a previous response, as with OpenAI. A function call
// output must answer a function call made earlier in the conversation.
func (r *Request) Task(requestID string, conv []Item) (*task.Task, error) {
	t := &task.Task{
		RequestID: requestID, Kind: task.KindChat, Model: r.Model, Stream: r.Stream,
		Tools: r.Tools, ToolChoice: r.ToolChoice, ParallelToolCalls: r.ParallelToolCalls, ResponseFormat: r.Format,
		Temperature: 1, TopP: 1,
	}
	if r.MaxOutputTokens != nil {
		t.MaxTokens = *r.MaxOutputTokens
	}
	if r.Temperature != nil {
		t.Temperature = *r.Temperature
	}
	if r.TopP != nil {
		t.TopP = *r.TopP
	}
	msgs := make([]task.Message, 0, len(conv)+1)
	if r.Instructions != nil && *r.Instructions != "" {
		msgs = append(msgs, task.Message{Role: "system", Content: *r.Instructions})
	}
	calls := map[string]bool{}
	for i := range conv {
		it := &conv[i]
		switch it.Type {
		case ItemMessage:
			msgs = append(msgs, task.Message{Role: it.Role, Content: it.Content, Parts: it.Parts})
		case ItemFunctionCall:
			if calls[it.CallID] {
				return nil, apierr.BadRequest("input", codeInvalidValue, "Invalid 'input': the function call '%s' appears twice in the conversation.", truncate(it.CallID))
			}
			calls[it.CallID] = true
			call := task.ToolCall{ID: it.CallID, Type: "function", Function: task.FunctionCall{Name: it.Name, Arguments: it.Arguments}}
			// Calls made together belong to one assistant turn, as in chat.
			if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" && len(msgs[n-1].Parts) == 0 {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
				continue
			}
			msgs = append(msgs, task.Message{Role: "assistant", ToolCalls: []task.ToolCall{call}})
		case ItemFunctionCallOutput:
			if !calls[it.CallID] {
				return nil, apierr.BadRequest("input", codeInvalidValue, "No tool call found for function call output with call_id '%s'.", truncate(it.CallID))
			}
			msgs = append(msgs, task.Message{Role: "tool", ToolCallID: it.CallID, Content: it.Output})
		default:
			return nil, apierr.Internal(errInvalidItem)
		}
	}
	if len(msgs) == 0 {
		return nil, apierr.BadRequest("input", codeMissing, "Missing required parameter: 'input'.")
	}
	t.Messages = msgs
	n := 0
	for _, m := range msgs {
		n += len(m.Content)
		for _, c := range m.ToolCalls {
			n += len(c.Function.Name) + len(c.Function.Arguments)
		}
	}
	t.PromptTokensHint = (n + 3) / 4 // about four bytes a token; scheduling only
	return t, nil
}

type itemError string

func (e itemError) Error() string { return string(e) }

const errInvalidItem = itemError("responses: conversation item of an unknown type")

// OutputItems are a finished response's output as conversation items, for
// the request that continues it.
func OutputItems(out []OutputItem) []Item {
	items := make([]Item, 0, len(out))
	for _, o := range out {
		switch o.Type {
		case ItemMessage:
			text := ""
			for _, c := range o.Content {
				text += c.Text
			}
			items = append(items, Item{Type: ItemMessage, Role: "assistant", Content: text})
		case ItemFunctionCall:
			items = append(items, Item{Type: ItemFunctionCall, CallID: o.CallID, Name: o.Name, Arguments: o.Arguments})
		}
	}
	return items
}
