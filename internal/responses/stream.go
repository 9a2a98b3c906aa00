package responses

import (
	"encoding/json"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Event is one server-sent event of a streamed response: its type (the
// SSE "event:" line) and its JSON (the "data:" line), which carries the
// same type and the event's sequence_number.
type Event struct {
	Type string
	Data []byte
}

// Builder turns a task's events into a response: the stream events in
// OpenAI's order, and the finished response object. An unstreamed
// response is built the same way with the events dropped, so both carry
// the same items. Not safe for concurrent use.
//
// Order: response.created, response.in_progress; per output item as it
// starts, response.output_item.added (and for a message
// response.content_part.added), then its deltas
// (response.output_text.delta, response.function_call_arguments.delta);
// at the end, per item in output order, its .done events
// (response.output_text.done, response.content_part.done, or
// response.function_call_arguments.done) and response.output_item.done;
// last response.completed or response.incomplete (or, on a failure,
// error then response.failed).
type Builder struct {
	resp   *Response
	seq    int
	msg    int // output index of the message item; -1 before text
	text   strings.Builder
	calls  map[int]int // tool call index → output index
	args   map[int]*strings.Builder
	events []Event
	newID  func(prefix string) string
}

// NewBuilder starts building resp (from NewResponse).
func NewBuilder(resp *Response) *Builder {
	return &Builder{resp: resp, msg: -1, calls: map[int]int{}, args: map[int]*strings.Builder{}, newID: ids.New}
}

// Response is the response as built so far.
func (b *Builder) Response() *Response { return b.resp }

func (b *Builder) emit(typ string, v map[string]any) {
	v["type"] = typ
	v["sequence_number"] = b.seq
	b.seq++
	data, err := json.Marshal(v)
	if err != nil { // only strings, numbers and the response's own types
		panic(err)
	}
	b.events = append(b.events, Event{Type: typ, Data: data})
}

// take returns the events emitted since the last take.
func (b *Builder) take() []Event {
	ev := b.events
	b.events = nil
	return ev
}

// snapshot copies the response so an event keeps it as it was.
func (b *Builder) snapshot() *Response {
	r := *b.resp
	r.Output = make([]OutputItem, len(b.resp.Output)) // [] when empty, never null: the SDKs append to it
	copy(r.Output, b.resp.Output)
	return &r
}

// Start is the stream's opening events.
func (b *Builder) Start() []Event {
	b.emit("response.created", map[string]any{"response": b.snapshot()})
	b.emit("response.in_progress", map[string]any{"response": b.snapshot()})
	return b.take()
}

// Delta adds a piece of text and of tool calls.
func (b *Builder) Delta(text string, calls []task.ToolCallDelta) []Event {
	if text != "" {
		b.openMessage()
		b.text.WriteString(text)
		b.emit("response.output_text.delta", map[string]any{"item_id": b.resp.Output[b.msg].ID, "output_index": b.msg,
			"content_index": 0, "delta": text, "logprobs": []any{}})
	}
	for _, d := range calls {
		idx, ok := b.calls[d.Index]
		if !ok {
			callID := d.ID
			if callID == "" {
				callID = b.newID("call_")
			}
			idx = len(b.resp.Output)
			b.calls[d.Index] = idx
			b.args[d.Index] = &strings.Builder{}
			b.resp.Output = append(b.resp.Output, OutputItem{ID: b.newID("fc_"), Type: ItemFunctionCall, Status: StatusInProgress,
				CallID: callID, Name: d.Name})
			b.emit("response.output_item.added", map[string]any{"output_index": idx, "item": b.resp.Output[idx]})
		} else if d.Name != "" && b.resp.Output[idx].Name == "" {
			b.resp.Output[idx].Name = d.Name
		}
		if d.Arguments != "" {
			b.args[d.Index].WriteString(d.Arguments)
			b.emit("response.function_call_arguments.delta", map[string]any{"item_id": b.resp.Output[idx].ID, "output_index": idx,
				"delta": d.Arguments})
		}
	}
	return b.take()
}

func (b *Builder) openMessage() {
	if b.msg >= 0 {
		return
	}
	b.msg = len(b.resp.Output)
	item := OutputItem{ID: b.newID("msg_"), Type: ItemMessage, Status: StatusInProgress, Role: "assistant", Content: []OutputText{}}
	b.resp.Output = append(b.resp.Output, item)
	b.emit("response.output_item.added", map[string]any{"output_index": b.msg, "item": item})
	b.emit("response.content_part.added", map[string]any{"item_id": item.ID, "output_index": b.msg, "content_index": 0,
		"part": newOutputText("")})
}

// Done finishes the response: finish is the task's finish reason ("length"
// makes it incomplete: max_output_tokens), usage its tokens.
func (b *Builder) Done(finish string, usage *task.Usage) []Event {
	if len(b.resp.Output) == 0 {
		b.openMessage() // an empty answer is an empty message
	}
	status := StatusCompleted
	if finish == "length" {
		status = StatusIncomplete
	}
	for i := range b.resp.Output {
		it := &b.resp.Output[i]
		it.Status = status
		if it.Type == ItemMessage {
			text := b.text.String()
			it.Content = []OutputText{newOutputText(text)}
			b.emit("response.output_text.done", map[string]any{"item_id": it.ID, "output_index": i, "content_index": 0,
				"text": text, "logprobs": []any{}})
			b.emit("response.content_part.done", map[string]any{"item_id": it.ID, "output_index": i, "content_index": 0,
				"part": it.Content[0]})
		} else {
			for k, idx := range b.calls {
				if idx == i {
					it.Arguments = b.args[k].String()
				}
			}
			if it.Name == "" {
				it.Name = "unknown" // an engine that never named its call
			}
			b.emit("response.function_call_arguments.done", map[string]any{"item_id": it.ID, "output_index": i,
				"name": it.Name, "arguments": it.Arguments})
		}
		b.emit("response.output_item.done", map[string]any{"output_index": i, "item": *it})
	}
	b.resp.Status = status
	b.resp.Usage = NewUsage(usage)
	final := "response.completed"
	if status == StatusIncomplete {
		b.resp.IncompleteDetails = &IncompleteDetails{Reason: "max_output_tokens"}
		final = "response.incomplete"
	}
	b.emit(final, map[string]any{"response": b.snapshot()})
	return b.take()
}

// Fail ends the stream with an error event and response.failed.
func (b *Builder) Fail(ae *apierr.Error) []Event {
	code := ae.Code
	if code == "" {
		code = ae.Type
	}
	var param any
	if ae.Param != "" {
		param = ae.Param
	}
	b.emit("error", map[string]any{"code": code, "message": ae.Message, "param": param})
	b.resp.Status = StatusFailed
	b.resp.Error = &ResponseError{Code: code, Message: ae.Message}
	b.emit("response.failed", map[string]any{"response": b.snapshot()})
	return b.take()
}
