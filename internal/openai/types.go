// Package openai holds the OpenAI wire format as Tollgate speaks it: request
// bodies for chat completions, completions and embeddings with their strict
// validation (every rejection is an *apierr.Error naming the offending
// `param`), their conversion into task.Task, and the response, stream
// chunk, model list and error bodies the gateway writes.
//
// Parameter policy (documented in README.md as well):
//   - accepted and used: model, messages (roles system, developer, user,
//     assistant with tool_calls and refusal, tool with tool_call_id;
//     content a string or parts text, image_url, input_audio), prompt,
//     input, max_tokens, max_completion_tokens, temperature, top_p, n
//     (1..8 for chat, 1 for completions), stop, seed, stream,
//     stream_options.include_usage, encoding_format (float|base64), tools,
//     tool_choice, parallel_tool_calls, response_format (text,
//     json_object, json_schema), logprobs, top_logprobs (0..20) — the
//     scheduler refuses with 400 "unsupported_parameter" what no
//     registered model version declares (task.Capability);
//   - accepted and ignored (they do not change what a single sample looks
//     like or are bookkeeping only): user, metadata, store, service_tier,
//     presence_penalty and frequency_penalty (range-checked to [-2,2]),
//     echo false, best_of 1, stream_options.include_obfuscation, empty
//     logit_bias, empty suffix;
//   - rejected with 400 code "unsupported_parameter": functions,
//     function_call, logit_bias with entries, audio, modalities,
//     prediction, web_search_options, reasoning_effort, echo true,
//     best_of > 1, suffix, dimensions, token-array prompts and inputs;
//   - any other field is rejected with 400 code "unknown_parameter", as
//     OpenAI does ("Unrecognized request argument supplied").
package openai

import (
	"encoding/json"
	"strconv"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Usage is OpenAI's token accounting.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// StreamOptions is the stream_options object.
type StreamOptions struct {
	IncludeUsage       bool `json:"include_usage"`
	IncludeObfuscation bool `json:"include_obfuscation"`
}

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role    string   `json:"role"`
	Content *Content `json:"content"`
	Name    string   `json:"name,omitempty"`
	// Tool is what a message of a tool-calling conversation adds; nil for
	// the common message (one pointer, not three fields, in every message
	// of every plain request).
	Tool *MessageTools `json:"tool,omitempty"`
}

// MessageTools are an assistant message's ToolCalls and Refusal, the
// ToolCallID a tool message answers, and a user message's content Parts
// (compacted) when they are not all text.
type MessageTools struct {
	Parts      json.RawMessage `json:"parts,omitempty"`
	ToolCalls  []task.ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Refusal    *string         `json:"refusal,omitempty"`
}

// tools is m's MessageTools, zero when it has none.
func (m *ChatMessage) tools() MessageTools {
	if m.Tool == nil {
		return MessageTools{}
	}
	return *m.Tool
}

// ChatRequest is the body of POST /v1/chat/completions after decoding.
type ChatRequest struct {
	Model               string         `json:"model"`
	Messages            []ChatMessage  `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float64       `json:"temperature"`
	TopP                *float64       `json:"top_p"`
	N                   *int           `json:"n"`
	Stop                StringList     `json:"stop"`
	Seed                *int64         `json:"seed"`
	Stream              bool           `json:"stream"`
	StreamOptions       *StreamOptions `json:"stream_options"`
	PresencePenalty     *float64       `json:"presence_penalty"`
	FrequencyPenalty    *float64       `json:"frequency_penalty"`
	User                string         `json:"user"`

	// The richer request (rich.go): nil or zero when not asked.
	Tools             []task.Tool          `json:"tools,omitempty"`
	ToolChoice        *task.ToolChoice     `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool                `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *task.ResponseFormat `json:"response_format,omitempty"`
	Logprobs          *bool                `json:"logprobs,omitempty"`
	TopLogprobs       *int                 `json:"top_logprobs,omitempty"`
}

// CompletionRequest is the body of POST /v1/completions after decoding.
type CompletionRequest struct {
	Model            string         `json:"model"`
	Prompt           *Prompt        `json:"prompt"`
	MaxTokens        *int           `json:"max_tokens"`
	Temperature      *float64       `json:"temperature"`
	TopP             *float64       `json:"top_p"`
	N                *int           `json:"n"`
	Stop             StringList     `json:"stop"`
	Seed             *int64         `json:"seed"`
	Stream           bool           `json:"stream"`
	StreamOptions    *StreamOptions `json:"stream_options"`
	PresencePenalty  *float64       `json:"presence_penalty"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	User             string         `json:"user"`
}

// EmbeddingRequest is the body of POST /v1/embeddings after decoding.
type EmbeddingRequest struct {
	Model          string  `json:"model"`
	Input          *Prompt `json:"input"`
	EncodingFormat string  `json:"encoding_format"`
	User           string  `json:"user"`
	Dimensions     *int    `json:"dimensions"`
}

// ChatCompletion is a non-streamed chat response.
type ChatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"` // "chat.completion"
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []ChatChoice `json:"choices"`
	Usage             Usage        `json:"usage"`
	SystemFingerprint *string      `json:"system_fingerprint"`
}

// ChatChoice is one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"` // null when not asked
	FinishReason string          `json:"finish_reason"`
}

// ResponseMessage is the assistant message of a ChatChoice.
type ResponseMessage struct {
	Role      string          `json:"role"`
	Content   *string         `json:"content"` // null when the answer only calls tools
	Refusal   *string         `json:"refusal"`
	ToolCalls []task.ToolCall `json:"tool_calls,omitempty"`
}

// ChatChunk is one SSE chunk of a streamed chat response.
type ChatChunk struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"` // "chat.completion.chunk"
	Created           int64             `json:"created"`
	Model             string            `json:"model"`
	Choices           []ChatChunkChoice `json:"choices"`
	Usage             *Usage            `json:"usage,omitempty"`
	SystemFingerprint *string           `json:"system_fingerprint"`
}

// ChatChunkChoice is one choice of a ChatChunk.
type ChatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        ChatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"` // null when not asked
	FinishReason *string         `json:"finish_reason"`
}

// ChatDelta is the incremental message of a ChatChunkChoice.
type ChatDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []ChunkToolCall `json:"tool_calls,omitempty"`
}

// ChunkToolCall is a piece of a streamed tool call, as OpenAI streams it:
// the first piece of call Index has its id, type and function name (and
// arguments ""), later ones only Index and a fragment of the arguments.
type ChunkToolCall struct {
	Index    int           `json:"index"`
	ID       string        `json:"id,omitempty"`
	Type     string        `json:"type,omitempty"`
	Function ChunkFunction `json:"function"`
}

// ChunkFunction is the function of a ChunkToolCall.
type ChunkFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// TextCompletion is a completions response, and also one SSE chunk of a
// streamed completions response (OpenAI uses the same object for both).
type TextCompletion struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"` // "text_completion"
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	Choices           []CompletionChoice `json:"choices"`
	Usage             *Usage             `json:"usage,omitempty"`
	SystemFingerprint *string            `json:"system_fingerprint"`
}

// CompletionChoice is one choice of a TextCompletion. FinishReason is null
// in stream chunks until the last one.
type CompletionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// EmbeddingList is an embeddings response.
type EmbeddingList struct {
	Object string      `json:"object"` // "list"
	Data   []Embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// Embedding is one vector; Embedding holds []float32 or, with
// encoding_format base64, a base64 string of little-endian float32s.
type Embedding struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// Model is one entry of GET /v1/models.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ModelList is GET /v1/models.
type ModelList struct {
	Object string  `json:"object"` // "list"
	Data   []Model `json:"data"`
}

// ErrorBody is OpenAI's error envelope. Param and Code are null when empty,
// as OpenAI renders them.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Content is a message's content: a string, or an array of parts. Text
// holds the string, or the text parts joined with newlines; an array with
// a part that is not text (image_url, input_audio; see parseParts) is kept
// in the message's MessageTools.Parts.
type Content struct {
	Text string
}

// UnmarshalJSON accepts a string or an array of at most MaxParts
// {"type":"text","text":...} parts with no other members.
func (c *Content) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		c.Text = s
		return nil
	}
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return errShape("a string or an array of text parts")
	}
	if len(parts) > MaxParts {
		return errShape("at most " + strconv.Itoa(MaxParts) + " content parts")
	}
	var out []byte
	for i, p := range parts {
		var typ string
		if json.Unmarshal(p["type"], &typ) != nil || typ != "text" {
			return errShape("text parts only (type \"text\")")
		}
		var text *string
		if json.Unmarshal(p["text"], &text) != nil || text == nil {
			return errShape("text parts with a \"text\" string")
		}
		for k := range p {
			if k != "type" && k != "text" {
				return errShape("text parts of only \"type\" and \"text\"")
			}
		}
		if i > 0 {
			out = append(out, '\n')
		}
		out = append(out, *text...)
	}
	c.Text = string(out)
	return nil
}

// StringList is a parameter that may be a string or an array of strings
// (stop). A JSON null leaves it nil.
type StringList []string

// UnmarshalJSON accepts null, a string or an array of strings.
func (l *StringList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = StringList{s}
		return nil
	}
	var arr []string
	if err := json.Unmarshal(b, &arr); err != nil {
		return errShape("a string or an array of strings")
	}
	*l = arr
	return nil
}

// Prompt is a completions prompt or embeddings input: a string or an array
// of strings. Token arrays (integers) are recognised so they can be rejected
// with a precise message.
type Prompt struct {
	Texts  []string
	Tokens bool // the client sent token IDs
	Array  bool // the client sent an array
}

// UnmarshalJSON accepts a string, an array of strings, or token arrays
// (flagged, rejected by validation).
func (p *Prompt) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		p.Texts = []string{s}
		return nil
	}
	var arr []string
	if err := json.Unmarshal(b, &arr); err == nil {
		p.Texts, p.Array = arr, true
		return nil
	}
	var toks []int64
	if err := json.Unmarshal(b, &toks); err == nil {
		p.Tokens, p.Array = true, true
		return nil
	}
	var tokss [][]int64
	if err := json.Unmarshal(b, &tokss); err == nil {
		p.Tokens, p.Array = true, true
		return nil
	}
	return errShape("a string or an array of strings")
}

// shapeError is a value of the right JSON kind but the wrong shape.
type shapeError struct{ want string }

func (e *shapeError) Error() string { return "must be " + e.want }

func errShape(want string) error { return &shapeError{want: want} }
