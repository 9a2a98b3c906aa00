// Package responses is OpenAI's Responses API as Tollgate speaks it: the
// strict decoding and validation of a POST /v1/responses body, its
// translation (with the conversation of a previous response) into a chat
// task.Task, the response object and the stream events rendered from a
// task's events, and the stores that keep responses for GET, DELETE and
// previous_response_id, scoped to the key that created them.
//
// Parameter policy (docs/responses.md):
//   - used: model, input, instructions, tools (type function), tool_choice,
//     parallel_tool_calls, text.format, max_output_tokens, temperature,
//     top_p, stream, store, previous_response_id, metadata, user;
//   - accepted and ignored (bookkeeping only): service_tier,
//     safety_identifier, prompt_cache_key, stream_options.include_obfuscation,
//     and at their defaults reasoning ({} or null), include
//     (reasoning.encrypted_content only: there is no reasoning to include),
//     truncation "disabled", background false, text.verbosity "medium";
//   - refused with 400 unsupported_parameter naming the field: any other
//     value of those, top_logprobs, max_tool_calls, prompt, conversation,
//     hosted tools (web_search, file_search, …), input_file and file_id
//     images, item_reference and reasoning items;
//   - any other field: 400 unknown_parameter.
//
// Bodies are read strictly: a duplicate key at any depth, a key in another
// case ("Model") and trailing data are refused, so the request a receipt
// names is the one every JSON parser reads.
package responses

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/jsonx"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Bounds on a request beyond the gateway's openai.Limits and body limit.
const (
	MaxTools          = 128
	MaxMetadata       = 16
	maxMetadataKey    = 64
	maxMetadataValue  = 512
	maxIDLen          = 128
	maxUserLen        = 256
	maxDescriptionLen = 8192
	maxJSONDepth      = 64
)

// Error codes (shared with internal/openai so clients see one vocabulary).
const (
	codeInvalidJSON  = openai.CodeInvalidJSON
	codeInvalidType  = openai.CodeInvalidType
	codeMissing      = openai.CodeMissing
	codeInvalidValue = openai.CodeInvalidValue
	codeUnsupported  = openai.CodeUnsupported
	codeUnknown      = openai.CodeUnknown
)

// Request is a validated POST /v1/responses body.
type Request struct {
	Model              string
	Input              []Item
	Instructions       *string
	Tools              []task.Tool
	ToolChoice         *task.ToolChoice // nil: auto
	ParallelToolCalls  *bool
	Format             *task.ResponseFormat // nil: text
	FormatDescription  string               // text.format.description (json_schema), echoed only
	MaxOutputTokens    *int
	Temperature        *float64
	TopP               *float64
	Stream             bool
	Store              bool // default true
	PreviousResponseID string
	Metadata           map[string]string
	User               string
}

// Item is one conversation item as Tollgate keeps it: a message, a
// function call the assistant made, or a function call's output. Input
// items and the output of stored responses both become Items.
type Item struct {
	Type string `json:"type"` // ItemMessage, ItemFunctionCall, ItemFunctionCallOutput
	// Message.
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"` // the text parts, joined
	// Parts is the content in chat form when it has images (compacted
	// JSON: text and image_url parts), as task.Message.Parts.
	Parts json.RawMessage `json:"parts,omitempty"`
	// Function call and its output.
	CallID    string `json:"call_id,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
	Output    string `json:"output,omitempty"`
}

// Item types.
const (
	ItemMessage            = "message"
	ItemFunctionCall       = "function_call"
	ItemFunctionCallOutput = "function_call_output"
)

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Parse decodes and validates a body. Every refusal is an *apierr.Error
// (400) naming its param.
func Parse(body []byte, lim openai.Limits) (*Request, error) {
	lim = withDefaults(lim)
	if err := checkStrict(body); err != nil {
		return nil, err
	}
	m, err := object("", body)
	if err != nil {
		return nil, err
	}
	r := &Request{Store: true}
	var (
		input, tools, toolChoice, text, metadata, reasoning, include json.RawMessage
		streamOptions, truncation, background                        json.RawMessage
		store                                                        *bool
		prev, user                                                   *string
	)
	mapped := map[string]any{
		"model": &r.Model, "input": &input, "instructions": &r.Instructions, "tools": &tools,
		"tool_choice": &toolChoice, "parallel_tool_calls": &r.ParallelToolCalls, "text": &text,
		"max_output_tokens": &r.MaxOutputTokens, "temperature": &r.Temperature, "top_p": &r.TopP,
		"stream": &r.Stream, "store": &store, "previous_response_id": &prev, "metadata": &metadata,
		"user": &user, "reasoning": &reasoning, "include": &include, "stream_options": &streamOptions,
		"truncation": &truncation, "background": &background,
	}
	var ignoredStrings = map[string]bool{"service_tier": true, "safety_identifier": true, "prompt_cache_key": true}
	for _, k := range sortedKeys(m) {
		raw := m[k]
		if dst, ok := mapped[k]; ok {
			if err := field(k, raw, dst); err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case ignoredStrings[k]:
			var s *string
			if err := field(k, raw, &s); err != nil {
				return nil, err
			}
			if s != nil && len(*s) > maxUserLen {
				return nil, apierr.BadRequest(k, codeInvalidValue, "Invalid '%s': longer than %d characters.", k, maxUserLen)
			}
		case k == "top_logprobs" || k == "max_tool_calls" || k == "prompt" || k == "conversation" || k == "tool_resources":
			if !isNull(raw) && !(k == "top_logprobs" && string(raw) == "0") {
				return nil, unsupported(k, "")
			}
		default:
			return nil, apierr.BadRequest(k, codeUnknown, "Unrecognized request argument supplied: %s", k)
		}
	}
	if err := checkModel(m, r.Model); err != nil {
		return nil, err
	}
	if store != nil {
		r.Store = *store
	}
	if prev != nil {
		if !validID(*prev, "resp_") {
			return nil, apierr.BadRequest("previous_response_id", codeInvalidValue, "Invalid 'previous_response_id': '%s'. Expected an ID that begins with 'resp_'.", truncate(*prev))
		}
		r.PreviousResponseID = *prev
	}
	if user != nil {
		if len(*user) > maxUserLen {
			return nil, apierr.BadRequest("user", codeInvalidValue, "Invalid 'user': longer than %d characters.", maxUserLen)
		}
		r.User = *user
	}
	if r.Input, err = parseInput(input, lim); err != nil {
		return nil, err
	}
	if len(r.Input) == 0 && r.PreviousResponseID == "" {
		return nil, apierr.BadRequest("input", codeMissing, "Missing required parameter: 'input'.")
	}
	if r.Tools, err = parseTools(tools); err != nil {
		return nil, err
	}
	if r.ToolChoice, err = parseToolChoice(toolChoice, r.Tools); err != nil {
		return nil, err
	}
	if err := parseText(text, r); err != nil {
		return nil, err
	}
	if r.Metadata, err = parseMetadata(metadata); err != nil {
		return nil, err
	}
	if err := checkHarmless(reasoning, include, truncation, background); err != nil {
		return nil, err
	}
	if err := parseStreamOptions(streamOptions, r.Stream); err != nil {
		return nil, err
	}
	if v := r.MaxOutputTokens; v != nil && (*v < 1 || *v > lim.MaxTokens) {
		return nil, apierr.BadRequest("max_output_tokens", codeInvalidValue, "Invalid 'max_output_tokens': expected an integer from 1 to %d, but got %d instead.", lim.MaxTokens, *v)
	}
	if v := r.Temperature; v != nil && (math.IsNaN(*v) || *v < 0 || *v > 2) {
		return nil, apierr.BadRequest("temperature", codeInvalidValue, "Invalid 'temperature': expected a value between 0 and 2, but got %g instead.", *v)
	}
	if v := r.TopP; v != nil && (math.IsNaN(*v) || *v <= 0 || *v > 1) {
		return nil, apierr.BadRequest("top_p", codeInvalidValue, "Invalid 'top_p': expected a value in (0, 1], but got %g instead.", *v)
	}
	return r, nil
}

func withDefaults(l openai.Limits) openai.Limits {
	if l.MaxTokens <= 0 {
		l.MaxTokens = 131072
	}
	if l.MaxMessages <= 0 {
		l.MaxMessages = 4096
	}
	return l
}

// checkStrict refuses what two JSON parsers could read differently: a
// duplicate key at any depth (encoding/json keeps the last, others the
// first), trailing data, and nesting deeper than maxJSONDepth. The check
// is jsonx.CheckStrict, shared with the chat decoder.
func checkStrict(body []byte) error {
	if err := jsonx.CheckStrict(body, maxJSONDepth); err != nil {
		var se *jsonx.StrictError
		if errors.As(err, &se) {
			return apierr.BadRequest(se.Path, codeInvalidJSON, "We could not parse the JSON body of your request: %s.", se.Reason)
		}
		return apierr.BadRequest("", codeInvalidJSON, "We could not parse the JSON body of your request: %s.", err.Error())
	}
	return nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of JSON input"
	}
	return err.Error()
}
