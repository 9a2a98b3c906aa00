package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/jsonx"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Limits bound what a request may ask for. The zero value means defaults.
type Limits struct {
	MaxTokens   int // largest max_tokens / max_completion_tokens; default 131072
	MaxMessages int // most chat messages; default 4096
	MaxInputs   int // most embedding inputs; default 2048
}

const (
	defaultMaxTokens   = 131072
	defaultMaxMessages = 4096
	defaultMaxInputs   = 2048
	maxStop            = 4
)

func (l Limits) withDefaults() Limits {
	if l.MaxTokens <= 0 {
		l.MaxTokens = defaultMaxTokens
	}
	if l.MaxMessages <= 0 {
		l.MaxMessages = defaultMaxMessages
	}
	if l.MaxInputs <= 0 {
		l.MaxInputs = defaultMaxInputs
	}
	return l
}

// Codes used in 400 responses.
const (
	CodeInvalidJSON     = "invalid_json"
	CodeInvalidType     = "invalid_type"
	CodeMissing         = "missing_required_parameter"
	CodeInvalidValue    = "invalid_value"
	CodeUnsupported     = "unsupported_parameter"
	CodeUnknown         = "unknown_parameter"
	CodeUnsupportedRole = "invalid_role"
)

// fieldKind says how an extra (not struct-mapped) field is treated.
type fieldKind int

const (
	ignored     fieldKind = iota // accepted, not used
	rejectIfSet                  // rejected unless null/false/0/""/{}/[] (or its allowed value)
)

// decodeObject parses body as one JSON object and returns its members.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, apierr.BadRequest("", CodeInvalidJSON, "We could not parse the JSON body of your request: the body is empty. The OpenAI API expects a JSON payload.")
	}
	if body[0] != '{' {
		return nil, apierr.BadRequest("", CodeInvalidJSON, "We could not parse the JSON body of your request: expected a JSON object.")
	}
	var m map[string]json.RawMessage
	// The common case in one pass; a body it refuses goes through the
	// Decoder, whose errors tell a bad value from trailing data.
	if json.Unmarshal(body, &m) == nil {
		return m, nil
	}
	m = nil
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		return nil, apierr.BadRequest("", CodeInvalidJSON, "We could not parse the JSON body of your request: %s.", jsonErrText(err))
	}
	if dec.More() {
		return nil, apierr.BadRequest("", CodeInvalidJSON, "We could not parse the JSON body of your request: trailing data after the JSON object.")
	}
	return m, nil
}

// checkStrict refuses a duplicate key at any depth (and trailing data)
// with a 400 naming the member, as Responses bodies are refused.
func checkStrict(body []byte) error {
	if err := jsonx.CheckStrict(body, 0); err != nil {
		var se *jsonx.StrictError
		if errors.As(err, &se) {
			return apierr.BadRequest(se.Path, CodeInvalidJSON, "We could not parse the JSON body of your request: %s.", se.Reason)
		}
		return apierr.BadRequest("", CodeInvalidJSON, "We could not parse the JSON body of your request: %s.", err.Error())
	}
	return nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return err.Error()
}

// Field decodes raw into dst, turning any failure into a 400 naming param
// in OpenAI's wording (the Responses API decodes its members with it too).
func Field(param string, raw json.RawMessage, dst any) error { return field(param, raw, dst) }

// field decodes raw into dst, turning any failure into a 400 naming param.
func field(param string, raw json.RawMessage, dst any) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		var ute *json.UnmarshalTypeError
		var se *shapeError
		switch {
		case errors.As(err, &se):
			return apierr.BadRequest(param, CodeInvalidType, "Invalid type for '%s': %s.", param, se.want)
		case errors.As(err, &ute):
			if ute.Value == "number" || strings.HasPrefix(ute.Value, "number ") {
				return apierr.BadRequest(param, CodeInvalidType, "Invalid value for '%s': expected %s, got %s (a non-integer or out of range).", param, typeName(ute.Type.String()), ute.Value)
			}
			return apierr.BadRequest(param, CodeInvalidType, "Invalid type for '%s': expected %s, but got %s.", param, typeName(ute.Type.String()), ute.Value)
		default:
			return apierr.BadRequest(param, CodeInvalidType, "Invalid value for '%s': %s.", param, jsonErrText(err))
		}
	}
	return nil
}

func typeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "a string"
	case "int", "int64":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "a boolean"
	default:
		if strings.HasPrefix(goType, "[]") {
			return "an array"
		}
		return "an object"
	}
}

// isEmptyValue reports whether raw is null, false, 0, "", {} or [].
func isEmptyValue(raw json.RawMessage) bool {
	switch s := string(bytes.TrimSpace(raw)); s {
	case "null", "false", "0", `""`, "{}", "[]":
		return true
	default:
		return strings.HasPrefix(s, "{") && strings.TrimSpace(s[1:len(s)-1]) == "" ||
			strings.HasPrefix(s, "[") && strings.TrimSpace(s[1:len(s)-1]) == ""
	}
}

// extras applies the policy for fields not mapped into the struct.
// keys are m's keys in sorted order, so the same body always names the
// same param.
func extras(m map[string]json.RawMessage, keys []string, mapped map[string]any, extra map[string]fieldKind) error {
	for _, k := range keys {
		if _, ok := mapped[k]; ok {
			continue
		}
		kind, known := extra[k]
		if !known {
			return apierr.BadRequest(k, CodeUnknown, "Unrecognized request argument supplied: %s", k)
		}
		if kind == rejectIfSet && !isEmptyValue(m[k]) {
			return apierr.BadRequest(k, CodeUnsupported, "Unsupported parameter: '%s' is not supported by this gateway.", k)
		}
	}
	return nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeMapped decodes each mapped member in key order.
func decodeMapped(m map[string]json.RawMessage, keys []string, mapped map[string]any) error {
	for _, k := range keys {
		dst, ok := mapped[k]
		if !ok {
			continue
		}
		if err := field(k, m[k], dst); err != nil {
			return err
		}
	}
	return nil
}

var commonExtra = map[string]fieldKind{
	"user":               ignored,
	"metadata":           ignored,
	"store":              ignored,
	"service_tier":       ignored,
	"logit_bias":         rejectIfSet,
	"functions":          rejectIfSet,
	"function_call":      rejectIfSet,
	"audio":              rejectIfSet,
	"modalities":         rejectIfSet,
	"prediction":         rejectIfSet,
	"web_search_options": rejectIfSet,
	"reasoning_effort":   rejectIfSet,
	"safety_identifier":  ignored,
	"prompt_cache_key":   ignored,
	"verbosity":          rejectIfSet,
}

// ParseChat decodes and validates a chat completions body.
func ParseChat(body []byte, lim Limits) (*ChatRequest, error) {
	lim = lim.withDefaults()
	if r, ok := fastChat(body, lim); ok {
		return r, nil
	}
	return parseChatGeneral(body, lim)
}

// parseChatGeneral is ParseChat for every body: decoded member by member,
// each error naming its param.
func parseChatGeneral(body []byte, lim Limits) (*ChatRequest, error) {
	m, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	// encoding/json keeps the last of a duplicate key (and the rich fields
	// reach the upstream as raw bytes other parsers may read by the
	// first), so a body the fast path declined is scanned whole for them.
	if err := checkStrict(body); err != nil {
		return nil, err
	}
	var r ChatRequest
	var messages []json.RawMessage
	var responseFormat, streamOptions, tools, toolChoice json.RawMessage
	mapped := map[string]any{
		"model": &r.Model, "messages": &messages, "max_tokens": &r.MaxTokens,
		"max_completion_tokens": &r.MaxCompletionTokens, "temperature": &r.Temperature,
		"top_p": &r.TopP, "n": &r.N, "stop": &r.Stop, "seed": &r.Seed, "stream": &r.Stream,
		"stream_options": &streamOptions, "presence_penalty": &r.PresencePenalty,
		"frequency_penalty": &r.FrequencyPenalty, "user": &r.User, "response_format": &responseFormat,
		"tools": &tools, "tool_choice": &toolChoice, "parallel_tool_calls": &r.ParallelToolCalls,
		"logprobs": &r.Logprobs, "top_logprobs": &r.TopLogprobs,
	}
	keys := sortedKeys(m)
	if err := extras(m, keys, mapped, commonExtra); err != nil {
		return nil, err
	}
	if err := decodeMapped(m, keys, mapped); err != nil {
		return nil, err
	}
	if r.ResponseFormat, err = parseResponseFormat(responseFormat); err != nil {
		return nil, err
	}
	if r.Tools, err = parseTools(tools); err != nil {
		return nil, err
	}
	if r.ToolChoice, err = parseToolChoice(toolChoice, r.Tools); err != nil {
		return nil, err
	}
	if err := checkLogprobs(r.Logprobs, r.TopLogprobs); err != nil {
		return nil, err
	}
	if err := parseStreamOptions(streamOptions, &r.StreamOptions); err != nil {
		return nil, err
	}
	if err := checkModel(m, r.Model); err != nil {
		return nil, err
	}
	if _, ok := m["messages"]; !ok || string(m["messages"]) == "null" {
		return nil, apierr.BadRequest("messages", CodeMissing, "Missing required parameter: 'messages'.")
	}
	if len(messages) == 0 {
		return nil, apierr.BadRequest("messages", CodeInvalidValue, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	if len(messages) > lim.MaxMessages {
		return nil, apierr.BadRequest("messages", CodeInvalidValue, "Invalid 'messages': at most %d messages are allowed.", lim.MaxMessages)
	}
	r.Messages = make([]ChatMessage, len(messages))
	for i, raw := range messages {
		if err := parseMessage(i, raw, &r.Messages[i]); err != nil {
			return nil, err
		}
	}
	if err := checkToolHistory(r.Messages); err != nil {
		return nil, err
	}
	if r.MaxTokens != nil && r.MaxCompletionTokens != nil {
		return nil, apierr.BadRequest("max_tokens", CodeInvalidValue, "Set only one of 'max_tokens' and 'max_completion_tokens'.")
	}
	if err := checkMaxTokens("max_tokens", r.MaxTokens, lim); err != nil {
		return nil, err
	}
	if err := checkMaxTokens("max_completion_tokens", r.MaxCompletionTokens, lim); err != nil {
		return nil, err
	}
	if err := checkSampling(r.Temperature, r.TopP, r.N, MaxChoices, r.PresencePenalty, r.FrequencyPenalty, r.Stop); err != nil {
		return nil, err
	}
	if err := checkStreamOptions(r.Stream, r.StreamOptions); err != nil {
		return nil, err
	}
	return &r, nil
}

// checkLogprobs: top_logprobs in [0, 20], and only with logprobs true.
func checkLogprobs(logprobs *bool, top *int) error {
	if top == nil {
		return nil
	}
	if *top < 0 || *top > MaxTopLogprobs {
		return apierr.BadRequest("top_logprobs", CodeInvalidValue, "Invalid 'top_logprobs': expected a value between 0 and %d, but got %d instead.", MaxTopLogprobs, *top)
	}
	if *top > 0 && (logprobs == nil || !*logprobs) {
		return apierr.BadRequest("top_logprobs", CodeInvalidValue, "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.")
	}
	return nil
}

func parseMessage(i int, raw json.RawMessage, msg *ChatMessage) error {
	m, err := decodeMessageObject(raw)
	if err != nil {
		prefix := messagePrefix(i)
		return apierr.BadRequest(prefix, CodeInvalidType, "Invalid type for '%s': expected an object.", prefix)
	}
	// The common message (role and content, maybe name) without building
	// error names up front; anything else takes the general path.
	if fastMessage(m, msg) {
		return checkMessage(i, msg)
	}
	prefix := messagePrefix(i)
	var content, toolCalls json.RawMessage
	ext := &MessageTools{}
	mapped := map[string]any{"role": &msg.Role, "content": &content, "name": &msg.Name,
		"tool_calls": &toolCalls, "tool_call_id": &ext.ToolCallID, "refusal": &ext.Refusal}
	for _, k := range sortedKeys(m) {
		dst, ok := mapped[k]
		if !ok {
			if (k == "function_call" || k == "audio") && !isEmptyValue(m[k]) {
				return apierr.BadRequest(prefix+"."+k, CodeUnsupported, "Unsupported parameter: '%s.%s' is not supported by this gateway.", prefix, k)
			}
			if isEmptyValue(m[k]) && (k == "function_call" || k == "audio") {
				continue
			}
			return apierr.BadRequest(prefix+"."+k, CodeUnknown, "Unrecognized argument in %s: %s", prefix, k)
		}
		if err := field(prefix+"."+k, m[k], dst); err != nil {
			return err
		}
	}
	if content != nil && string(content) != "null" {
		msg.Content = &Content{}
		if json.Unmarshal(content, &msg.Content.Text) != nil {
			text, parts, err := parseParts(prefix+".content", msg.Role, content)
			if err != nil {
				return err
			}
			msg.Content.Text, ext.Parts = text, parts
		}
	}
	if toolCalls != nil && string(toolCalls) != "null" {
		if msg.Role != "assistant" {
			return apierr.BadRequest(prefix+".tool_calls", CodeUnknown, "Unrecognized argument in %s: tool_calls (only assistant messages carry tool calls)", prefix)
		}
		calls, err := parseToolCalls(prefix+".tool_calls", toolCalls)
		if err != nil {
			return err
		}
		if len(calls) > 0 {
			ext.ToolCalls = calls
		}
	}
	if _, ok := m["tool_call_id"]; ok && msg.Role != "tool" {
		return apierr.BadRequest(prefix+".tool_call_id", CodeUnknown, "Unrecognized argument in %s: tool_call_id (only tool messages answer a call)", prefix)
	}
	if ext.Refusal != nil && msg.Role != "assistant" {
		return apierr.BadRequest(prefix+".refusal", CodeUnknown, "Unrecognized argument in %s: refusal (only assistant messages carry one)", prefix)
	}
	if ext.ToolCalls != nil || ext.ToolCallID != "" || ext.Refusal != nil || ext.Parts != nil {
		msg.Tool = ext
	}
	return checkMessage(i, msg)
}

func messagePrefix(i int) string { return "messages[" + strconv.Itoa(i) + "]" }

// fastMessage decodes a message whose members are all role, content or
// name, in any order, each decoding cleanly; it reports false (leaving
// msg for the general path to redo) otherwise.
func fastMessage(m map[string]json.RawMessage, msg *ChatMessage) bool {
	for k, raw := range m {
		var err error
		switch k {
		case "role":
			err = json.Unmarshal(raw, &msg.Role)
		case "content":
			// Only a string: an array of parts takes the general path,
			// which bounds and checks them (parseParts).
			if len(raw) == 0 || raw[0] != '"' {
				err = errSlowPath
				break
			}
			err = json.Unmarshal(raw, &msg.Content)
		case "name":
			err = json.Unmarshal(raw, &msg.Name)
		default:
			err = errSlowPath
		}
		if err != nil {
			*msg = ChatMessage{}
			return false
		}
	}
	return true
}

var errSlowPath = errors.New("not the common shape")

// checkMessage validates decoded message i.
func checkMessage(i int, msg *ChatMessage) error {
	switch msg.Role {
	case "system", "developer", "user", "assistant":
		if msg.Content != nil {
			return nil
		}
	}
	prefix := messagePrefix(i)
	ext := msg.tools()
	switch msg.Role {
	case "system", "developer", "user":
	case "assistant":
		// An assistant turn that only called tools, or refused, has no content.
		if len(ext.ToolCalls) > 0 || ext.Refusal != nil {
			return nil
		}
	case "tool":
		if ext.ToolCallID == "" {
			return apierr.BadRequest(prefix+".tool_call_id", CodeMissing, "Missing required parameter: '%s.tool_call_id'.", prefix)
		}
		if len(ext.ToolCallID) > MaxToolCallIDLen {
			return apierr.BadRequest(prefix+".tool_call_id", CodeInvalidValue, "Invalid '%s.tool_call_id': longer than %d bytes.", prefix, MaxToolCallIDLen)
		}
	case "":
		return apierr.BadRequest(prefix+".role", CodeMissing, "Missing required parameter: '%s.role'.", prefix)
	case "function":
		return apierr.BadRequest(prefix+".role", CodeUnsupported, "Invalid value for '%s.role': 'function' messages (the deprecated function calling) are not supported; use 'tool' messages.", prefix)
	default:
		return apierr.BadRequest(prefix+".role", CodeUnsupportedRole, "Invalid value: '%s'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", msg.Role)
	}
	if msg.Content == nil {
		return apierr.BadRequest(prefix+".content", CodeMissing, "Missing required parameter: '%s.content'.", prefix)
	}
	return nil
}

func decodeMessageObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("not an object")
	}
	return m, nil
}

func checkModel(m map[string]json.RawMessage, model string) error {
	if raw, ok := m["model"]; !ok || string(raw) == "null" {
		return apierr.BadRequest("model", CodeMissing, "Missing required parameter: 'model'.")
	}
	if model == "" {
		return apierr.BadRequest("model", CodeInvalidValue, "Invalid 'model': empty string.")
	}
	if len(model) > 256 {
		return apierr.BadRequest("model", CodeInvalidValue, "Invalid 'model': longer than 256 characters.")
	}
	return nil
}

func checkMaxTokens(param string, v *int, lim Limits) error {
	if v == nil {
		return nil
	}
	if *v < 1 {
		return apierr.BadRequest(param, CodeInvalidValue, "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", param, *v)
	}
	if *v > lim.MaxTokens {
		return apierr.BadRequest(param, CodeInvalidValue, "Invalid '%s': integer above maximum value. Expected a value <= %d, but got %d instead.", param, lim.MaxTokens, *v)
	}
	return nil
}

func checkSampling(temp, topP *float64, n *int, maxN int, presence, frequency *float64, stop StringList) error {
	if temp != nil && (math.IsNaN(*temp) || *temp < 0 || *temp > 2) {
		return apierr.BadRequest("temperature", CodeInvalidValue, "Invalid 'temperature': expected a value between 0 and 2, but got %g instead.", *temp)
	}
	if topP != nil && (math.IsNaN(*topP) || *topP <= 0 || *topP > 1) {
		return apierr.BadRequest("top_p", CodeInvalidValue, "Invalid 'top_p': expected a value in (0, 1], but got %g instead.", *topP)
	}
	if n != nil {
		if *n < 1 {
			return apierr.BadRequest("n", CodeInvalidValue, "Invalid 'n': integer below minimum value. Expected a value >= 1, but got %d instead.", *n)
		}
		if *n > maxN && maxN == 1 {
			return apierr.BadRequest("n", CodeUnsupported, "Unsupported value: 'n' greater than 1 is not supported by this gateway.")
		}
		if *n > maxN {
			return apierr.BadRequest("n", CodeInvalidValue, "Invalid 'n': integer above maximum value. Expected a value <= %d, but got %d instead.", maxN, *n)
		}
	}
	for _, p := range []struct {
		name string
		v    *float64
	}{{"presence_penalty", presence}, {"frequency_penalty", frequency}} {
		if p.v != nil && (math.IsNaN(*p.v) || *p.v < -2 || *p.v > 2) {
			return apierr.BadRequest(p.name, CodeInvalidValue, "Invalid '%s': expected a value between -2 and 2, but got %g instead.", p.name, *p.v)
		}
	}
	if len(stop) > maxStop {
		return apierr.BadRequest("stop", CodeInvalidValue, "Invalid 'stop': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxStop, len(stop))
	}
	for _, s := range stop {
		if s == "" {
			return apierr.BadRequest("stop", CodeInvalidValue, "Invalid 'stop': empty stop sequence.")
		}
	}
	return nil
}

// parseStreamOptions decodes the stream_options object as strictly as the
// body around it: exact-case keys, and an unknown key is refused naming
// "stream_options.<key>" (encoding/json alone would drop it, or match
// "Include_Usage" case-insensitively). raw nil or null leaves *dst nil.
func parseStreamOptions(raw json.RawMessage, dst **StreamOptions) error {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return apierr.BadRequest("stream_options", CodeInvalidType, "Invalid type for 'stream_options': expected an object.")
	}
	so := &StreamOptions{}
	for _, k := range sortedKeys(m) {
		param := "stream_options." + k
		var err error
		switch k {
		case "include_usage":
			err = field(param, m[k], &so.IncludeUsage)
		case "include_obfuscation":
			err = field(param, m[k], &so.IncludeObfuscation)
		default:
			err = apierr.BadRequest(param, CodeUnknown, "Unrecognized request argument supplied: %s", param)
		}
		if err != nil {
			return err
		}
	}
	*dst = so
	return nil
}

func checkStreamOptions(stream bool, so *StreamOptions) error {
	if so != nil && !stream {
		return apierr.BadRequest("stream_options", CodeInvalidValue, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return nil
}

var completionExtra = map[string]fieldKind{
	"user":              ignored,
	"metadata":          ignored,
	"store":             ignored,
	"service_tier":      ignored,
	"logit_bias":        rejectIfSet,
	"logprobs":          rejectIfSet, // completions: integer or null
	"echo":              rejectIfSet,
	"suffix":            rejectIfSet,
	"safety_identifier": ignored,
}

// ParseCompletion decodes and validates a completions body. Only a single
// prompt (a string, or an array of exactly one string) is supported.
func ParseCompletion(body []byte, lim Limits) (*CompletionRequest, error) {
	lim = lim.withDefaults()
	m, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	var r CompletionRequest
	var bestOf *int
	var streamOptions json.RawMessage
	mapped := map[string]any{
		"model": &r.Model, "prompt": &r.Prompt, "max_tokens": &r.MaxTokens,
		"temperature": &r.Temperature, "top_p": &r.TopP, "n": &r.N, "stop": &r.Stop,
		"seed": &r.Seed, "stream": &r.Stream, "stream_options": &streamOptions,
		"presence_penalty": &r.PresencePenalty, "frequency_penalty": &r.FrequencyPenalty,
		"user": &r.User, "best_of": &bestOf,
	}
	keys := sortedKeys(m)
	if err := extras(m, keys, mapped, completionExtra); err != nil {
		return nil, err
	}
	if err := decodeMapped(m, keys, mapped); err != nil {
		return nil, err
	}
	if err := parseStreamOptions(streamOptions, &r.StreamOptions); err != nil {
		return nil, err
	}
	if err := checkModel(m, r.Model); err != nil {
		return nil, err
	}
	if r.Prompt == nil {
		return nil, apierr.BadRequest("prompt", CodeMissing, "Missing required parameter: 'prompt'.")
	}
	if r.Prompt.Tokens {
		return nil, apierr.BadRequest("prompt", CodeUnsupported, "Invalid 'prompt': token-array prompts are not supported by this gateway; send text.")
	}
	if len(r.Prompt.Texts) != 1 {
		return nil, apierr.BadRequest("prompt", CodeUnsupported, "Invalid 'prompt': exactly one prompt per request is supported, got %d.", len(r.Prompt.Texts))
	}
	if bestOf != nil && *bestOf != 1 {
		return nil, apierr.BadRequest("best_of", CodeUnsupported, "Unsupported value: 'best_of' other than 1 is not supported by this gateway.")
	}
	if err := checkMaxTokens("max_tokens", r.MaxTokens, lim); err != nil {
		return nil, err
	}
	if err := checkSampling(r.Temperature, r.TopP, r.N, 1, r.PresencePenalty, r.FrequencyPenalty, r.Stop); err != nil {
		return nil, err
	}
	if err := checkStreamOptions(r.Stream, r.StreamOptions); err != nil {
		return nil, err
	}
	return &r, nil
}

var embeddingExtra = map[string]fieldKind{
	"user":              ignored,
	"safety_identifier": ignored,
}

// MaxEmbeddingDimensions bounds an embeddings request's dimensions (the
// largest embedding models have a few thousand).
const MaxEmbeddingDimensions = 65536

// ParseEmbedding decodes and validates an embeddings body.
func ParseEmbedding(body []byte, lim Limits) (*EmbeddingRequest, error) {
	lim = lim.withDefaults()
	m, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	var r EmbeddingRequest
	mapped := map[string]any{"model": &r.Model, "input": &r.Input, "encoding_format": &r.EncodingFormat, "user": &r.User, "dimensions": &r.Dimensions}
	keys := sortedKeys(m)
	if err := extras(m, keys, mapped, embeddingExtra); err != nil {
		return nil, err
	}
	if err := decodeMapped(m, keys, mapped); err != nil {
		return nil, err
	}
	if err := checkModel(m, r.Model); err != nil {
		return nil, err
	}
	if r.Input == nil {
		return nil, apierr.BadRequest("input", CodeMissing, "Missing required parameter: 'input'.")
	}
	if r.Input.Tokens {
		return nil, apierr.BadRequest("input", CodeUnsupported, "Invalid 'input': token-array inputs are not supported by this gateway; send strings.")
	}
	if len(r.Input.Texts) == 0 {
		return nil, apierr.BadRequest("input", CodeInvalidValue, "Invalid 'input': empty array. Expected an array with minimum length 1.")
	}
	if len(r.Input.Texts) > lim.MaxInputs {
		return nil, apierr.BadRequest("input", CodeInvalidValue, "Invalid 'input': at most %d inputs are allowed, got %d.", lim.MaxInputs, len(r.Input.Texts))
	}
	for _, s := range r.Input.Texts {
		if s == "" {
			return nil, apierr.BadRequest("input", CodeInvalidValue, "Invalid 'input': empty string.")
		}
	}
	if d := r.Dimensions; d != nil && (*d < 1 || *d > MaxEmbeddingDimensions) {
		return nil, apierr.BadRequest("dimensions", CodeInvalidValue, "Invalid 'dimensions': %d; expected an integer in [1, %d].", *d, MaxEmbeddingDimensions)
	}
	switch r.EncodingFormat {
	case "", "float", "base64":
	default:
		return nil, apierr.BadRequest("encoding_format", CodeInvalidValue, "Invalid value for 'encoding_format': '%s'. Supported values are: 'float' and 'base64'.", r.EncodingFormat)
	}
	return &r, nil
}

// Task converts a validated chat request into a worker task.
func (r *ChatRequest) Task(requestID string) *task.Task {
	t := &task.Task{RequestID: requestID, Kind: task.KindChat, Model: r.Model, Stop: r.Stop, Seed: r.Seed, Stream: r.Stream}
	t.Messages = make([]task.Message, len(r.Messages))
	n := 0
	for i, m := range r.Messages {
		ext := m.tools()
		tm := task.Message{Role: m.Role, Name: m.Name, ToolCalls: ext.ToolCalls, ToolCallID: ext.ToolCallID, Parts: ext.Parts}
		if m.Content != nil {
			tm.Content = m.Content.Text
		}
		t.Messages[i] = tm
		n += len(tm.Content) + len(tm.Parts)
		for _, c := range ext.ToolCalls {
			n += len(c.Function.Name) + len(c.Function.Arguments)
		}
	}
	if len(r.Tools) > 0 {
		t.Tools, t.ToolChoice, t.ParallelToolCalls = r.Tools, r.ToolChoice, r.ParallelToolCalls
		for _, tool := range r.Tools {
			n += len(tool.Function.Name) + len(tool.Function.Description) + len(tool.Function.Parameters)
		}
	}
	t.ResponseFormat = r.ResponseFormat
	if r.Logprobs != nil && *r.Logprobs {
		t.Logprobs = true
		if r.TopLogprobs != nil {
			t.TopLogprobs = *r.TopLogprobs
		}
	}
	if r.N != nil && *r.N > 1 {
		t.N = *r.N
	}
	if r.MaxTokens != nil {
		t.MaxTokens = *r.MaxTokens
	} else if r.MaxCompletionTokens != nil {
		t.MaxTokens = *r.MaxCompletionTokens
	}
	t.Temperature, t.TopP = sampling(r.Temperature, r.TopP)
	t.PromptTokensHint = tokenHint(n)
	return t
}

// IncludeUsage reports whether the stream should end with a usage chunk.
func (r *ChatRequest) IncludeUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// DefaultCompletionMaxTokens is OpenAI's max_tokens default for /v1/completions.
const DefaultCompletionMaxTokens = 16

// Task converts a validated completions request into a worker task.
func (r *CompletionRequest) Task(requestID string) *task.Task {
	t := &task.Task{RequestID: requestID, Kind: task.KindCompletion, Model: r.Model, Prompt: r.Prompt.Texts[0], Stop: r.Stop, Seed: r.Seed, Stream: r.Stream}
	t.MaxTokens = DefaultCompletionMaxTokens
	if r.MaxTokens != nil {
		t.MaxTokens = *r.MaxTokens
	}
	t.Temperature, t.TopP = sampling(r.Temperature, r.TopP)
	t.PromptTokensHint = tokenHint(len(t.Prompt))
	return t
}

// IncludeUsage reports whether the stream should end with a usage chunk.
func (r *CompletionRequest) IncludeUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// Task converts a validated embeddings request into a worker task.
func (r *EmbeddingRequest) Task(requestID string) *task.Task {
	n := 0
	for _, s := range r.Input.Texts {
		n += len(s)
	}
	t := &task.Task{RequestID: requestID, Kind: task.KindEmbedding, Model: r.Model, Inputs: r.Input.Texts, PromptTokensHint: tokenHint(n)}
	if r.Dimensions != nil {
		t.Dimensions = *r.Dimensions
	}
	return t
}

// sampling applies OpenAI's defaults: temperature 1 and top_p 1 when unset.
func sampling(temp, topP *float64) (float64, float64) {
	t, p := 1.0, 1.0
	if temp != nil {
		t = *temp
	}
	if topP != nil {
		p = *topP
	}
	return t, p
}

// tokenHint estimates tokens from bytes (about four bytes a token in English
// BPE vocabularies); the scheduler only uses it to predict prefill time.
func tokenHint(bytes int) int { return (bytes + 3) / 4 }
