package task

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
)

// Bounds on what an Output accumulates from outside (a worker's deltas).
const (
	MaxOutputToolCalls = 128 // tool calls of one choice
	MaxToolCallIDBytes = 256
	MaxToolNameBytes   = 64
)

// RichOutput reports whether t's answer is hashed in the rich layout
// (ResponseDigestV2): it declares tools or asks for several choices. Any
// other task's response digest is SHA-256 of its text, as always.
func (t *Task) RichOutput() bool { return len(t.Tools) > 0 || t.N > 1 }

// Choices is the number of choices t asks for (N, at least 1).
func (t *Task) Choices() int { return max(t.N, 1) }

// Output accumulates a rich task's answer from its deltas, in the order
// they arrive: each choice's text and its tool calls. The worker builds
// one from what its engine emitted, the gateway one from what it relayed,
// and both hash it with Digest.
type Output struct {
	Choices []ChoiceOutput
}

// ChoiceOutput is one choice's text and complete tool calls.
type ChoiceOutput struct {
	Text  []byte
	Calls []ToolCall
}

// NewOutput makes an output for a task with n choices.
func NewOutput(n int) *Output { return &Output{Choices: make([]ChoiceOutput, max(n, 1))} }

// Add appends one delta of choice: its text, and its tool-call pieces.
// A piece with an ID starts call Index (which must be the next one); one
// without continues call Index's arguments. It refuses a choice out of
// range, a call started twice or continued before it started, and calls,
// IDs or names over the bounds.
func (o *Output) Add(choice int, text string, calls []ToolCallDelta) error {
	if choice < 0 || choice >= len(o.Choices) {
		return fmt.Errorf("choice %d out of range (the task asks for %d)", choice, len(o.Choices))
	}
	c := &o.Choices[choice]
	c.Text = append(c.Text, text...)
	for _, d := range calls {
		switch {
		case d.ID != "" && d.Index == len(c.Calls):
			if len(c.Calls) == MaxOutputToolCalls {
				return fmt.Errorf("choice %d: more than %d tool calls", choice, MaxOutputToolCalls)
			}
			if len(d.ID) > MaxToolCallIDBytes || len(d.Name) > MaxToolNameBytes || d.Name == "" {
				return fmt.Errorf("choice %d: tool call %d has an id over %d bytes or a name not 1..%d bytes", choice, d.Index, MaxToolCallIDBytes, MaxToolNameBytes)
			}
			if d.Type != "" && d.Type != "function" {
				return fmt.Errorf("choice %d: tool call %d of type %q", choice, d.Index, d.Type)
			}
			for i := range c.Calls {
				if c.Calls[i].ID == d.ID {
					return fmt.Errorf("choice %d: tool call %d repeats the id of call %d", choice, d.Index, i)
				}
			}
			c.Calls = append(c.Calls, ToolCall{ID: d.ID, Type: "function", Function: FunctionCall{Name: d.Name, Arguments: d.Arguments}})
		case d.ID == "" && d.Name == "" && d.Index >= 0 && d.Index < len(c.Calls):
			c.Calls[d.Index].Function.Arguments += d.Arguments
		default:
			return fmt.Errorf("choice %d: tool call piece for call %d out of order (%d calls started)", choice, d.Index, len(c.Calls))
		}
	}
	return nil
}

// Bytes counts the text and argument bytes accumulated (for usage bounds).
func (o *Output) Bytes() int {
	n := 0
	for _, c := range o.Choices {
		n += len(c.Text)
		for _, call := range c.Calls {
			n += len(call.Function.Name) + len(call.Function.Arguments)
		}
	}
	return n
}

// Digest is ResponseDigestV2 of the output.
func (o *Output) Digest() [32]byte { return ResponseDigestV2(o.Choices) }

// responseV2Domain opens the rich layout.
const responseV2Domain = "tollgate/response/v2\n"

// ResponseDigestV2 is the response digest of a rich task (RichOutput):
// SHA-256 over a fixed byte layout (docs/receipts.md), every length a
// 4-byte big-endian unsigned integer:
//
//	"tollgate/response/v2\n"
//	u32 number of choices
//	per choice, in index order:
//	  u32 len(text) text
//	  u32 number of tool calls
//	  per call, in index order: u32 len(id) id  u32 len(name) name  u32 len(arguments) arguments
//
// Every field is length-prefixed, so no two outputs share an encoding.
// Logprobs are not covered: they describe the tokens, the tokens are the
// text.
func ResponseDigestV2(choices []ChoiceOutput) [32]byte {
	h := sha256.New()
	h.Write([]byte(responseV2Domain))
	writeU32(h, len(choices))
	for _, c := range choices {
		writeField(h, c.Text)
		writeU32(h, len(c.Calls))
		for _, call := range c.Calls {
			writeField(h, []byte(call.ID))
			writeField(h, []byte(call.Function.Name))
			writeField(h, []byte(call.Function.Arguments))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func writeU32(h hash.Hash, n int) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	h.Write(b[:])
}

func writeField(h hash.Hash, b []byte) {
	writeU32(h, len(b))
	h.Write(b)
}
