package task

import (
	"fmt"
	"math"
	"time"
)

// DefaultRecordSkew is the clock difference allowed between a worker and
// the gateway.
const DefaultRecordSkew = 30 * time.Second

// UsageBounds bound a record's token counts by what the gateway can see
// without the model's tokenizer. Completion tokens are at most max_tokens
// and at most
//
//	CompletionPerByte × (bytes of the text relayed + bytes of the longest stop string) + CompletionSlack
//
// — byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece with byte
// fallback (Llama 2, the built-in engine's models) never make more tokens
// than bytes, so a factor of 1 holds, and the slack covers the tokens
// that leave no text (end of sequence, a first token's stripped space, a
// stop string cut from the text). Prompt tokens are at most
//
//	PromptPerByte × bytes of the prompt (message contents and names, tool calls, tool definitions and a response schema, or the inputs) + PromptPerMessage × (messages and tools, or inputs) + PromptSlack
//
// — the chat template's markers per message, and its fixed part (BOS, the
// assistant's header, a default system prompt). The zero value of a field
// takes DefaultUsageBounds'.
type UsageBounds struct {
	CompletionPerByte float64 `yaml:"completion_tokens_per_byte" json:"completion_tokens_per_byte"`
	CompletionSlack   int     `yaml:"completion_slack" json:"completion_slack"`
	PromptPerByte     float64 `yaml:"prompt_tokens_per_byte" json:"prompt_tokens_per_byte"`
	PromptPerMessage  int     `yaml:"prompt_tokens_per_message" json:"prompt_tokens_per_message"`
	PromptSlack       int     `yaml:"prompt_slack" json:"prompt_slack"`
	// HiddenCompletion marks a model that spends completion tokens on text
	// it does not return (a reasoning model behind a reasoning parser):
	// only max_tokens then bounds its completion tokens.
	HiddenCompletion bool `yaml:"hidden_completion" json:"hidden_completion"`
}

// DefaultUsageBounds suit the built-in engine (SentencePiece, byte
// fallback), the simulator (at least one byte a token) and the common
// byte-level BPE models behind vLLM, SGLang or llama.cpp: one token a
// byte, 16 tokens of slack on completions, and 8 per message plus 64 on
// prompts (ChatML and Llama 3 spend 5 per message; a template's default
// system prompt some 20–30).
var DefaultUsageBounds = UsageBounds{CompletionPerByte: 1, CompletionSlack: 16, PromptPerByte: 1, PromptPerMessage: 8, PromptSlack: 64}

// WithDefaults fills b's zero fields from DefaultUsageBounds.
func (b UsageBounds) WithDefaults() UsageBounds {
	d := DefaultUsageBounds
	if b.CompletionPerByte == 0 {
		b.CompletionPerByte = d.CompletionPerByte
	}
	if b.CompletionSlack == 0 {
		b.CompletionSlack = d.CompletionSlack
	}
	if b.PromptPerByte == 0 {
		b.PromptPerByte = d.PromptPerByte
	}
	if b.PromptPerMessage == 0 {
		b.PromptPerMessage = d.PromptPerMessage
	}
	if b.PromptSlack == 0 {
		b.PromptSlack = d.PromptSlack
	}
	return b
}

// Validate names a bad field.
func (b UsageBounds) Validate() error {
	switch {
	case b.CompletionPerByte < 0 || b.CompletionPerByte > 64 || math.IsNaN(b.CompletionPerByte):
		return fmt.Errorf("completion_tokens_per_byte: %v is outside [0, 64]", b.CompletionPerByte)
	case b.PromptPerByte < 0 || b.PromptPerByte > 64 || math.IsNaN(b.PromptPerByte):
		return fmt.Errorf("prompt_tokens_per_byte: %v is outside [0, 64]", b.PromptPerByte)
	case b.CompletionSlack < 0 || b.CompletionSlack > 1<<20:
		return fmt.Errorf("completion_slack: %d is outside [0, 1048576]", b.CompletionSlack)
	case b.PromptPerMessage < 0 || b.PromptPerMessage > 1<<20:
		return fmt.Errorf("prompt_tokens_per_message: %d is outside [0, 1048576]", b.PromptPerMessage)
	case b.PromptSlack < 0 || b.PromptSlack > 1<<20:
		return fmt.Errorf("prompt_slack: %d is outside [0, 1048576]", b.PromptSlack)
	}
	return nil
}

// MaxPromptTokens is the most prompt tokens a record of t may claim.
func (b UsageBounds) MaxPromptTokens(t *Task) int {
	b = b.WithDefaults()
	bytes, parts := len(t.Prompt), 1
	switch t.Kind {
	case KindChat:
		bytes, parts = 0, len(t.Messages)
		for _, m := range t.Messages {
			bytes += len(m.Content) + len(m.Name) + len(m.ToolCallID)
			for _, c := range m.ToolCalls {
				bytes += len(c.ID) + len(c.Function.Name) + len(c.Function.Arguments)
			}
		}
		// Tool definitions and a schema reach the model through the
		// template as text: a call of a large tool spends prompt tokens
		// on it however short its messages are.
		for _, tool := range t.Tools {
			bytes += len(tool.Function.Name) + len(tool.Function.Description) + len(tool.Function.Parameters)
			parts++
		}
		if f := t.ResponseFormat; f != nil {
			bytes += len(f.Name) + len(f.Schema)
		}
	case KindEmbedding:
		bytes, parts = 0, len(t.Inputs)
		for _, in := range t.Inputs {
			bytes += len(in)
		}
	}
	return int(math.Ceil(b.PromptPerByte*float64(bytes))) + b.PromptPerMessage*parts + b.PromptSlack
}

// MaxCompletionTokens is the most completion tokens a record of t may
// claim for textBytes of text relayed; -1 means unbounded but for
// max_tokens.
func (b UsageBounds) MaxCompletionTokens(t *Task, textBytes int) int {
	b = b.WithDefaults()
	limit := -1
	if !b.HiddenCompletion {
		stop := 0
		for _, s := range t.Stop {
			stop = max(stop, len(s))
		}
		limit = int(math.Ceil(b.CompletionPerByte*float64(textBytes+stop))) + b.CompletionSlack
	}
	if t.MaxTokens > 0 && (limit < 0 || t.MaxTokens < limit) {
		limit = t.MaxTokens
	}
	return limit
}
