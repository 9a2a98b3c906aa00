package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Bounds on the richer chat request (tools, structured output, logprobs,
// several choices, content parts). OpenAI's own where it has one.
const (
	MaxTools           = 128     // tools per request
	MaxToolNameLen     = 64      // function and json_schema names
	MaxToolDescLen     = 16384   // a function's description
	MaxSchemaBytes     = 1 << 18 // a function's parameters, a json_schema's schema (compacted)
	MaxToolCallsPerMsg = 128     // tool_calls of one assistant message
	MaxToolCallIDLen   = 256     // a tool call's id
	MaxArgumentsBytes  = 1 << 20 // one tool call's arguments
	MaxParts           = 256     // content parts of one message
	MaxTopLogprobs     = 20
	MaxChoices         = 8 // n
)

// isToolName reports whether s matches ^[a-zA-Z0-9_-]{1,64}$.
func isToolName(s string) bool {
	if s == "" || len(s) > MaxToolNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// members decodes raw as one JSON object whose keys are all in allowed
// (exact case); an unknown key is refused naming param.key.
func members(param string, raw json.RawMessage, allowed ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, apierr.BadRequest(param, CodeInvalidType, "Invalid type for '%s': expected an object.", param)
	}
	for _, k := range sortedKeys(m) {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return nil, apierr.BadRequest(param+"."+k, CodeUnknown, "Unrecognized request argument supplied: %s.%s", param, k)
		}
	}
	return m, nil
}

// present reports whether m has key k with a non-null value.
func present(m map[string]json.RawMessage, k string) bool {
	raw, ok := m[k]
	return ok && string(raw) != "null"
}

// schemaObject compacts raw, which must be a JSON object, bounded in size.
func schemaObject(param string, raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, apierr.BadRequest(param, CodeInvalidType, "Invalid type for '%s': expected an object (a JSON Schema).", param)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, apierr.BadRequest(param, CodeInvalidType, "Invalid value for '%s': %s.", param, jsonErrText(err))
	}
	if buf.Len() > MaxSchemaBytes {
		return nil, apierr.BadRequest(param, CodeInvalidValue, "Invalid '%s': the schema is larger than %d bytes.", param, MaxSchemaBytes)
	}
	return buf.Bytes(), nil
}

// parseTools decodes the tools array.
func parseTools(raw json.RawMessage) ([]task.Tool, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := field("tools", raw, &items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, apierr.BadRequest("tools", CodeInvalidValue, "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	if len(items) > MaxTools {
		return nil, apierr.BadRequest("tools", CodeInvalidValue, "Invalid 'tools': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", MaxTools, len(items))
	}
	tools := make([]task.Tool, len(items))
	seen := make(map[string]bool, len(items))
	for i, item := range items {
		p := "tools[" + strconv.Itoa(i) + "]"
		m, err := members(p, item, "type", "function")
		if err != nil {
			return nil, err
		}
		if err := field(p+".type", m["type"], &tools[i].Type); err != nil {
			return nil, err
		}
		if tools[i].Type != "function" {
			return nil, apierr.BadRequest(p+".type", CodeInvalidValue, "Invalid value for '%s.type': '%s'. Supported values are: 'function'.", p, tools[i].Type)
		}
		if !present(m, "function") {
			return nil, apierr.BadRequest(p+".function", CodeMissing, "Missing required parameter: '%s.function'.", p)
		}
		fp := p + ".function"
		fm, err := members(fp, m["function"], "name", "description", "parameters", "strict")
		if err != nil {
			return nil, err
		}
		fn := &tools[i].Function
		if !present(fm, "name") {
			return nil, apierr.BadRequest(fp+".name", CodeMissing, "Missing required parameter: '%s.name'.", fp)
		}
		if err := field(fp+".name", fm["name"], &fn.Name); err != nil {
			return nil, err
		}
		if !isToolName(fn.Name) {
			return nil, apierr.BadRequest(fp+".name", CodeInvalidValue, "Invalid '%s.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", fp)
		}
		if seen[fn.Name] {
			return nil, apierr.BadRequest(fp+".name", CodeInvalidValue, "Invalid 'tools': function name '%s' is declared twice.", fn.Name)
		}
		seen[fn.Name] = true
		if present(fm, "description") {
			if err := field(fp+".description", fm["description"], &fn.Description); err != nil {
				return nil, err
			}
			if len(fn.Description) > MaxToolDescLen {
				return nil, apierr.BadRequest(fp+".description", CodeInvalidValue, "Invalid '%s.description': longer than %d bytes.", fp, MaxToolDescLen)
			}
		}
		if present(fm, "parameters") {
			if fn.Parameters, err = schemaObject(fp+".parameters", fm["parameters"]); err != nil {
				return nil, err
			}
		}
		if present(fm, "strict") {
			var strict bool
			if err := field(fp+".strict", fm["strict"], &strict); err != nil {
				return nil, err
			}
			fn.Strict = &strict
		}
	}
	return tools, nil
}

// parseToolChoice decodes tool_choice against the declared tools.
func parseToolChoice(raw json.RawMessage, tools []task.Tool) (*task.ToolChoice, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	var tc task.ToolChoice
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		switch mode {
		case "none", "auto", "required":
			tc.Mode = mode
		default:
			return nil, apierr.BadRequest("tool_choice", CodeInvalidValue, "Invalid value for 'tool_choice': '%s'. Supported values are: 'none', 'auto', 'required', or an object naming a function.", mode)
		}
	} else {
		m, err := members("tool_choice", raw, "type", "function")
		if err != nil {
			return nil, apierr.BadRequest("tool_choice", CodeInvalidType, "Invalid type for 'tool_choice': expected one of 'none', 'auto', 'required' or {\"type\":\"function\",\"function\":{\"name\":...}}.")
		}
		var typ string
		if err := field("tool_choice.type", m["type"], &typ); err != nil {
			return nil, err
		}
		if typ != "function" {
			return nil, apierr.BadRequest("tool_choice.type", CodeInvalidValue, "Invalid value for 'tool_choice.type': '%s'. Supported values are: 'function'.", typ)
		}
		if !present(m, "function") {
			return nil, apierr.BadRequest("tool_choice.function", CodeMissing, "Missing required parameter: 'tool_choice.function'.")
		}
		fm, err := members("tool_choice.function", m["function"], "name")
		if err != nil {
			return nil, err
		}
		if !present(fm, "name") {
			return nil, apierr.BadRequest("tool_choice.function.name", CodeMissing, "Missing required parameter: 'tool_choice.function.name'.")
		}
		if err := field("tool_choice.function.name", fm["name"], &tc.Name); err != nil {
			return nil, err
		}
		tc.Mode = "function"
	}
	if len(tools) == 0 {
		if tc.Mode == "none" {
			return nil, nil // nothing to call either way
		}
		return nil, apierr.BadRequest("tool_choice", CodeInvalidValue, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
	}
	if tc.Mode == "function" {
		found := false
		for i := range tools {
			found = found || tools[i].Function.Name == tc.Name
		}
		if !found {
			return nil, apierr.BadRequest("tool_choice", CodeInvalidValue, "Invalid value for 'tool_choice': function '%s' is not among the declared tools.", tc.Name)
		}
	}
	return &tc, nil
}

// parseResponseFormat decodes response_format; type text (the default)
// gives nil, so a plain task stays plain.
func parseResponseFormat(raw json.RawMessage) (*task.ResponseFormat, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	m, err := members("response_format", raw, "type", "json_schema")
	if err != nil {
		return nil, err
	}
	var rf task.ResponseFormat
	if !present(m, "type") {
		return nil, apierr.BadRequest("response_format.type", CodeMissing, "Missing required parameter: 'response_format.type'.")
	}
	if err := field("response_format.type", m["type"], &rf.Type); err != nil {
		return nil, err
	}
	switch rf.Type {
	case task.FormatText, task.FormatJSONObject:
		if present(m, "json_schema") {
			return nil, apierr.BadRequest("response_format.json_schema", CodeInvalidValue, "Invalid 'response_format.json_schema': only allowed with type 'json_schema'.")
		}
		if rf.Type == task.FormatText {
			return nil, nil
		}
		return &rf, nil
	case task.FormatJSONSchema:
	default:
		return nil, apierr.BadRequest("response_format.type", CodeInvalidValue, "Invalid value for 'response_format.type': '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", rf.Type)
	}
	if !present(m, "json_schema") {
		return nil, apierr.BadRequest("response_format.json_schema", CodeMissing, "Missing required parameter: 'response_format.json_schema'.")
	}
	const p = "response_format.json_schema"
	sm, err := members(p, m["json_schema"], "name", "description", "schema", "strict")
	if err != nil {
		return nil, err
	}
	if !present(sm, "name") {
		return nil, apierr.BadRequest(p+".name", CodeMissing, "Missing required parameter: '%s.name'.", p)
	}
	if err := field(p+".name", sm["name"], &rf.Name); err != nil {
		return nil, err
	}
	if !isToolName(rf.Name) {
		return nil, apierr.BadRequest(p+".name", CodeInvalidValue, "Invalid '%s.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", p)
	}
	if present(sm, "description") {
		var d string
		if err := field(p+".description", sm["description"], &d); err != nil {
			return nil, err
		}
	}
	if present(sm, "schema") {
		if rf.Schema, err = schemaObject(p+".schema", sm["schema"]); err != nil {
			return nil, err
		}
	}
	if present(sm, "strict") {
		if err := field(p+".strict", sm["strict"], &rf.Strict); err != nil {
			return nil, err
		}
	}
	return &rf, nil
}

// parseToolCalls decodes an assistant message's tool_calls.
func parseToolCalls(prefix string, raw json.RawMessage) ([]task.ToolCall, error) {
	var items []json.RawMessage
	if err := field(prefix, raw, &items); err != nil {
		return nil, err
	}
	if len(items) > MaxToolCallsPerMsg {
		return nil, apierr.BadRequest(prefix, CodeInvalidValue, "Invalid '%s': at most %d tool calls are allowed.", prefix, MaxToolCallsPerMsg)
	}
	calls := make([]task.ToolCall, len(items))
	for i, item := range items {
		p := prefix + "[" + strconv.Itoa(i) + "]"
		m, err := members(p, item, "id", "type", "function")
		if err != nil {
			return nil, err
		}
		c := &calls[i]
		for _, k := range []string{"id", "type", "function"} {
			if !present(m, k) {
				return nil, apierr.BadRequest(p+"."+k, CodeMissing, "Missing required parameter: '%s.%s'.", p, k)
			}
		}
		if err := field(p+".id", m["id"], &c.ID); err != nil {
			return nil, err
		}
		if c.ID == "" || len(c.ID) > MaxToolCallIDLen {
			return nil, apierr.BadRequest(p+".id", CodeInvalidValue, "Invalid '%s.id': expected 1..%d bytes.", p, MaxToolCallIDLen)
		}
		if err := field(p+".type", m["type"], &c.Type); err != nil {
			return nil, err
		}
		if c.Type != "function" {
			return nil, apierr.BadRequest(p+".type", CodeInvalidValue, "Invalid value for '%s.type': '%s'. Supported values are: 'function'.", p, c.Type)
		}
		fp := p + ".function"
		fm, err := members(fp, m["function"], "name", "arguments")
		if err != nil {
			return nil, err
		}
		for _, k := range []string{"name", "arguments"} {
			if !present(fm, k) {
				return nil, apierr.BadRequest(fp+"."+k, CodeMissing, "Missing required parameter: '%s.%s'.", fp, k)
			}
		}
		if err := field(fp+".name", fm["name"], &c.Function.Name); err != nil {
			return nil, err
		}
		if !isToolName(c.Function.Name) {
			return nil, apierr.BadRequest(fp+".name", CodeInvalidValue, "Invalid '%s.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", fp)
		}
		if err := field(fp+".arguments", fm["arguments"], &c.Function.Arguments); err != nil {
			return nil, err
		}
		if len(c.Function.Arguments) > MaxArgumentsBytes {
			return nil, apierr.BadRequest(fp+".arguments", CodeInvalidValue, "Invalid '%s.arguments': longer than %d bytes.", fp, MaxArgumentsBytes)
		}
	}
	return calls, nil
}

// parseParts decodes an array of content parts: text for every role,
// image_url and input_audio for user messages only. It returns the text
// parts joined by newlines and, when any part is not text, the array
// compacted (so a text-only array maps to the same task as its string).
func parseParts(prefix, role string, raw json.RawMessage) (string, json.RawMessage, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return "", nil, apierr.BadRequest(prefix, CodeInvalidType, "Invalid type for '%s': expected a string or an array of content parts.", prefix)
	}
	if len(items) > MaxParts {
		return "", nil, apierr.BadRequest(prefix, CodeInvalidValue, "Invalid '%s': at most %d content parts are allowed.", prefix, MaxParts)
	}
	var text []byte
	texts, rich := 0, false
	for i, item := range items {
		p := prefix + "[" + strconv.Itoa(i) + "]"
		var head struct {
			Type string `json:"type"`
		}
		m, err := members(p, item, "type", "text", "image_url", "input_audio")
		if err != nil {
			return "", nil, err
		}
		if err := field(p+".type", m["type"], &head.Type); err != nil {
			return "", nil, err
		}
		only := func(k string) error {
			for key := range m {
				if key != "type" && key != k {
					return apierr.BadRequest(p+"."+key, CodeUnknown, "Unrecognized argument in %s of type '%s': %s", p, head.Type, key)
				}
			}
			if !present(m, k) {
				return apierr.BadRequest(p+"."+k, CodeMissing, "Missing required parameter: '%s.%s'.", p, k)
			}
			return nil
		}
		switch head.Type {
		case "text":
			if err := only("text"); err != nil {
				return "", nil, err
			}
			var s string
			if err := field(p+".text", m["text"], &s); err != nil {
				return "", nil, err
			}
			if texts > 0 {
				text = append(text, '\n')
			}
			texts++
			text = append(text, s...)
			continue
		case "image_url", "input_audio":
			if role != "user" {
				return "", nil, apierr.BadRequest(p+".type", CodeInvalidValue, "Invalid value for '%s.type': '%s' parts are only allowed in user messages.", p, head.Type)
			}
		default:
			return "", nil, apierr.BadRequest(p+".type", CodeInvalidValue, "Invalid value for '%s.type': '%s'. Supported values are: 'text', 'image_url' and 'input_audio'.", p, head.Type)
		}
		rich = true
		if err := only(head.Type); err != nil {
			return "", nil, err
		}
		if err := checkMediaPart(p+"."+head.Type, head.Type, m[head.Type]); err != nil {
			return "", nil, err
		}
	}
	if !rich {
		return string(text), nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", nil, apierr.BadRequest(prefix, CodeInvalidType, "Invalid value for '%s': %s.", prefix, jsonErrText(err))
	}
	return string(text), buf.Bytes(), nil
}

// checkMediaPart validates an image_url {url, detail} or input_audio
// {data, format} object.
func checkMediaPart(p, kind string, raw json.RawMessage) error {
	if kind == "image_url" {
		m, err := members(p, raw, "url", "detail")
		if err != nil {
			return err
		}
		var url, detail string
		if !present(m, "url") {
			return apierr.BadRequest(p+".url", CodeMissing, "Missing required parameter: '%s.url'.", p)
		}
		if err := field(p+".url", m["url"], &url); err != nil {
			return err
		}
		if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "data:image/") {
			return apierr.BadRequest(p+".url", CodeInvalidValue, "Invalid '%s.url': expected an http(s) URL or a data:image/... URL.", p)
		}
		if present(m, "detail") {
			if err := field(p+".detail", m["detail"], &detail); err != nil {
				return err
			}
			if detail != "auto" && detail != "low" && detail != "high" {
				return apierr.BadRequest(p+".detail", CodeInvalidValue, "Invalid value for '%s.detail': '%s'. Supported values are: 'auto', 'low' and 'high'.", p, detail)
			}
		}
		return nil
	}
	m, err := members(p, raw, "data", "format")
	if err != nil {
		return err
	}
	var data, format string
	for _, k := range []string{"data", "format"} {
		if !present(m, k) {
			return apierr.BadRequest(p+"."+k, CodeMissing, "Missing required parameter: '%s.%s'.", p, k)
		}
	}
	if err := field(p+".data", m["data"], &data); err != nil {
		return err
	}
	if _, err := base64.StdEncoding.DecodeString(data); err != nil || data == "" {
		return apierr.BadRequest(p+".data", CodeInvalidValue, "Invalid '%s.data': expected base64-encoded audio.", p)
	}
	if err := field(p+".format", m["format"], &format); err != nil {
		return err
	}
	if format != "wav" && format != "mp3" {
		return apierr.BadRequest(p+".format", CodeInvalidValue, "Invalid value for '%s.format': '%s'. Supported values are: 'wav' and 'mp3'.", p, format)
	}
	return nil
}

// checkToolHistory checks that every tool message answers a call of an
// earlier assistant message, as OpenAI does.
func checkToolHistory(msgs []ChatMessage) error {
	calls := map[string]bool{}
	for i := range msgs {
		m := msgs[i].tools()
		for _, c := range m.ToolCalls {
			calls[c.ID] = true
		}
		if msgs[i].Role == "tool" && !calls[m.ToolCallID] {
			p := messagePrefix(i) + ".tool_call_id"
			return apierr.BadRequest(p, CodeInvalidValue, "Invalid '%s': messages with role 'tool' must answer a 'tool_calls' entry of an earlier assistant message; '%s' is not one.", p, m.ToolCallID)
		}
	}
	return nil
}
