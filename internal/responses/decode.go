package responses

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// object decodes raw as one JSON object into its members, keyed exactly as
// sent (a struct would match "Model" to "model"). param names raw in
// errors ("" for the body).
func object(param string, raw json.RawMessage) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	var m map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		if param == "" {
			return nil, apierr.BadRequest("", codeInvalidJSON, "We could not parse the JSON body of your request: expected a JSON object.")
		}
		return nil, apierr.BadRequest(param, codeInvalidType, "Invalid type for '%s': expected an object.", param)
	}
	return m, nil
}

// field decodes raw into dst, turning any failure into a 400 naming param.
func field(param string, raw json.RawMessage, dst any) error { return openai.Field(param, raw, dst) }

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func isNull(raw json.RawMessage) bool { return raw == nil || string(bytes.TrimSpace(raw)) == "null" }

func unsupported(param, detail string) error {
	if detail == "" {
		detail = "is not supported by this gateway"
	}
	return apierr.BadRequest(param, codeUnsupported, "Unsupported parameter: '%s' %s.", param, detail)
}

func unknown(param string) error {
	return apierr.BadRequest(param, codeUnknown, "Unrecognized argument: '%s'.", param)
}

func missing(param string) error {
	return apierr.BadRequest(param, codeMissing, "Missing required parameter: '%s'.", param)
}

// validID reports whether id is a plausible ID with the prefix: printable
// ASCII without spaces or slashes, at most maxIDLen bytes.
func validID(id, prefix string) bool {
	if !strings.HasPrefix(id, prefix) || len(id) <= len(prefix) || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '/' {
			return false
		}
	}
	return true
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func checkModel(m map[string]json.RawMessage, model string) error {
	if isNull(m["model"]) {
		return missing("model")
	}
	if model == "" {
		return apierr.BadRequest("model", codeInvalidValue, "Invalid 'model': empty string.")
	}
	if len(model) > 256 {
		return apierr.BadRequest("model", codeInvalidValue, "Invalid 'model': longer than 256 characters.")
	}
	return nil
}

// parseInput reads input: a string (one user message) or an array of items.
func parseInput(raw json.RawMessage, lim openai.Limits) ([]Item, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, apierr.BadRequest("input", codeInvalidValue, "Invalid 'input': empty string.")
		}
		return []Item{{Type: ItemMessage, Role: "user", Content: s}}, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, apierr.BadRequest("input", codeInvalidType, "Invalid type for 'input': expected a string or an array of input items.")
	}
	if len(arr) == 0 {
		return nil, apierr.BadRequest("input", codeInvalidValue, "Invalid 'input': empty array. Expected an array with minimum length 1.")
	}
	if len(arr) > lim.MaxMessages {
		return nil, apierr.BadRequest("input", codeInvalidValue, "Invalid 'input': at most %d items are allowed, got %d.", lim.MaxMessages, len(arr))
	}
	items := make([]Item, len(arr))
	for i, r := range arr {
		if err := parseItem("input["+strconv.Itoa(i)+"]", r, &items[i]); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// parseItem reads one input item: a message (type optional), a
// function_call or a function_call_output.
func parseItem(p string, raw json.RawMessage, it *Item) error {
	m, err := object(p, raw)
	if err != nil {
		return err
	}
	typ := ItemMessage
	if !isNull(m["type"]) {
		if err := field(p+".type", m["type"], &typ); err != nil {
			return err
		}
	}
	it.Type = typ
	// id and status are what an output item passed back carries.
	allowed := map[string]bool{"type": true, "id": true, "status": true}
	switch typ {
	case ItemMessage:
		allowed["role"], allowed["content"] = true, true
	case ItemFunctionCall:
		allowed["call_id"], allowed["name"], allowed["arguments"] = true, true, true
	case ItemFunctionCallOutput:
		allowed["call_id"], allowed["output"] = true, true
	case "item_reference", "reasoning", "file_search_call", "web_search_call", "computer_call", "computer_call_output",
		"image_generation_call", "code_interpreter_call", "local_shell_call", "local_shell_call_output", "mcp_call",
		"mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "custom_tool_call", "custom_tool_call_output":
		return apierr.BadRequest(p+".type", codeUnsupported, "Unsupported value: '%s' items are not supported by this gateway.", typ)
	default:
		return apierr.BadRequest(p+".type", codeInvalidValue, "Invalid value for '%s.type': '%s'. Supported values are: 'message', 'function_call' and 'function_call_output'.", p, truncate(typ))
	}
	for _, k := range sortedKeys(m) {
		if !allowed[k] {
			return unknown(p + "." + k)
		}
	}
	for _, k := range []string{"id", "status"} {
		if raw, ok := m[k]; ok && !isNull(raw) {
			var s string
			if err := field(p+"."+k, raw, &s); err != nil {
				return err
			}
			if len(s) > maxIDLen {
				return apierr.BadRequest(p+"."+k, codeInvalidValue, "Invalid '%s.%s': longer than %d characters.", p, k, maxIDLen)
			}
		}
	}
	switch typ {
	case ItemMessage:
		return parseMessage(p, m, it)
	case ItemFunctionCall:
		if err := requiredString(p+".call_id", m["call_id"], &it.CallID, maxIDLen); err != nil {
			return err
		}
		if err := requiredString(p+".name", m["name"], &it.Name, 64); err != nil {
			return err
		}
		if isNull(m["arguments"]) {
			return missing(p + ".arguments")
		}
		return field(p+".arguments", m["arguments"], &it.Arguments)
	default: // ItemFunctionCallOutput
		if err := requiredString(p+".call_id", m["call_id"], &it.CallID, maxIDLen); err != nil {
			return err
		}
		return parseOutput(p+".output", m["output"], it)
	}
}

func isString(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '"'
}

// requiredString reads a non-empty string of at most max bytes (max < 0:
// any length).
func requiredString(p string, raw json.RawMessage, dst *string, max int) error {
	if isNull(raw) {
		return missing(p)
	}
	if err := field(p, raw, dst); err != nil {
		return err
	}
	if *dst == "" {
		return apierr.BadRequest(p, codeInvalidValue, "Invalid '%s': empty string.", p)
	}
	if max >= 0 && len(*dst) > max {
		return apierr.BadRequest(p, codeInvalidValue, "Invalid '%s': longer than %d characters.", p, max)
	}
	return nil
}

// parseOutput reads a function_call_output's output: a string, or an
// array of input_text parts (joined).
func parseOutput(p string, raw json.RawMessage, it *Item) error {
	if isNull(raw) {
		return missing(p)
	}
	if isString(raw) {
		return field(p, raw, &it.Output)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return apierr.BadRequest(p, codeInvalidType, "Invalid type for '%s': expected a string or an array of input_text parts.", p)
	}
	var b strings.Builder
	for i, pr := range parts {
		pp := p + "[" + strconv.Itoa(i) + "]"
		pm, err := object(pp, pr)
		if err != nil {
			return err
		}
		var typ string
		if err := field(pp+".type", pm["type"], &typ); err != nil {
			return err
		}
		if typ != "input_text" {
			return apierr.BadRequest(pp+".type", codeUnsupported, "Unsupported value: '%s' parts in a function call output are not supported by this gateway; send text.", truncate(typ))
		}
		text, err := textPart(pp, pm)
		if err != nil {
			return err
		}
		b.WriteString(text)
	}
	it.Output = b.String()
	return nil
}

// textPart reads {type, text} (with annotations and logprobs allowed on
// output_text).
func textPart(p string, m map[string]json.RawMessage) (string, error) {
	var typ, text string
	_ = json.Unmarshal(m["type"], &typ)
	for _, k := range sortedKeys(m) {
		switch {
		case k == "type" || k == "text":
		case typ == "output_text" && (k == "annotations" || k == "logprobs"):
		default:
			return "", unknown(p + "." + k)
		}
	}
	if isNull(m["text"]) {
		return "", missing(p + ".text")
	}
	if err := field(p+".text", m["text"], &text); err != nil {
		return "", err
	}
	return text, nil
}

var roles = []string{"user", "system", "developer", "assistant"}

func parseMessage(p string, m map[string]json.RawMessage, it *Item) error {
	if isNull(m["role"]) {
		return missing(p + ".role")
	}
	if err := field(p+".role", m["role"], &it.Role); err != nil {
		return err
	}
	if !slices.Contains(roles, it.Role) {
		return apierr.BadRequest(p+".role", openai.CodeUnsupportedRole, "Invalid value: '%s'. Supported values are: 'user', 'system', 'developer' and 'assistant'.", truncate(it.Role))
	}
	raw := m["content"]
	if isNull(raw) {
		return missing(p + ".content")
	}
	if isString(raw) {
		return field(p+".content", raw, &it.Content)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return apierr.BadRequest(p+".content", codeInvalidType, "Invalid type for '%s.content': expected a string or an array of content parts.", p)
	}
	var text strings.Builder
	var chat []map[string]any // chat-form parts, kept when there is an image
	image := false
	for i, pr := range parts {
		pp := p + ".content[" + strconv.Itoa(i) + "]"
		pm, err := object(pp, pr)
		if err != nil {
			return err
		}
		var typ string
		if isNull(pm["type"]) {
			return missing(pp + ".type")
		}
		if err := field(pp+".type", pm["type"], &typ); err != nil {
			return err
		}
		assistant := it.Role == "assistant"
		switch {
		case typ == "input_text" || assistant && typ == "output_text":
			s, err := textPart(pp, pm)
			if err != nil {
				return err
			}
			text.WriteString(s)
			chat = append(chat, map[string]any{"type": "text", "text": s})
		case assistant && typ == "refusal":
			for _, k := range sortedKeys(pm) {
				if k != "type" && k != "refusal" {
					return unknown(pp + "." + k)
				}
			}
			var s string
			if err := requiredString(pp+".refusal", pm["refusal"], &s, -1); err != nil {
				return err
			}
			text.WriteString(s)
			chat = append(chat, map[string]any{"type": "text", "text": s})
		case typ == "input_image" && it.Role == "user":
			part, err := imagePart(pp, pm)
			if err != nil {
				return err
			}
			chat, image = append(chat, part), true
		case typ == "input_file" || typ == "input_audio":
			return apierr.BadRequest(pp+".type", codeUnsupported, "Unsupported value: '%s' content is not supported by this gateway.", typ)
		default:
			return apierr.BadRequest(pp+".type", codeInvalidValue, "Invalid value for '%s.type': '%s' is not a content type of a '%s' message.", pp, truncate(typ), it.Role)
		}
	}
	it.Content = text.String()
	if image {
		b, err := json.Marshal(chat)
		if err != nil {
			return apierr.Internal(err)
		}
		it.Parts = b
	}
	return nil
}

// imagePart turns an input_image part into a chat image_url part. Only
// URLs (https or data:) are served; file IDs need a Files API.
func imagePart(p string, m map[string]json.RawMessage) (map[string]any, error) {
	for _, k := range sortedKeys(m) {
		switch k {
		case "type", "image_url", "detail":
		case "file_id":
			if !isNull(m[k]) {
				return nil, unsupported(p+".file_id", "is not supported by this gateway (there is no Files API); send image_url")
			}
		default:
			return nil, unknown(p + "." + k)
		}
	}
	var url, detail string
	if err := requiredString(p+".image_url", m["image_url"], &url, -1); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "data:image/") {
		return nil, apierr.BadRequest(p+".image_url", codeInvalidValue, "Invalid '%s.image_url': expected an http(s) URL or a data:image/ URL.", p)
	}
	if !isNull(m["detail"]) {
		if err := field(p+".detail", m["detail"], &detail); err != nil {
			return nil, err
		}
		switch detail {
		case "auto", "low", "high":
		default:
			return nil, apierr.BadRequest(p+".detail", codeInvalidValue, "Invalid value for '%s.detail': '%s'. Supported values are: 'auto', 'low' and 'high'.", p, truncate(detail))
		}
	}
	img := map[string]any{"url": url}
	if detail != "" {
		img["detail"] = detail
	}
	return map[string]any{"type": "image_url", "image_url": img}, nil
}

// parseTools reads the flat Responses tool shape {type, name, description,
// parameters, strict}.
func parseTools(raw json.RawMessage) ([]task.Tool, error) {
	if isNull(raw) {
		return nil, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return nil, apierr.BadRequest("tools", codeInvalidType, "Invalid type for 'tools': expected an array.")
	}
	if len(arr) > MaxTools {
		return nil, apierr.BadRequest("tools", codeInvalidValue, "Invalid 'tools': at most %d tools are allowed, got %d.", MaxTools, len(arr))
	}
	tools := make([]task.Tool, 0, len(arr))
	names := map[string]bool{}
	for i, tr := range arr {
		p := "tools[" + strconv.Itoa(i) + "]"
		m, err := object(p, tr)
		if err != nil {
			return nil, err
		}
		var typ string
		if err := requiredString(p+".type", m["type"], &typ, 64); err != nil {
			return nil, err
		}
		if typ != "function" {
			return nil, apierr.BadRequest(p+".type", codeUnsupported, "Unsupported value: '%s' tools are not supported by this gateway; only 'function' tools are.", truncate(typ))
		}
		t := task.Tool{Type: "function"}
		for _, k := range sortedKeys(m) {
			switch k {
			case "type":
			case "name":
				if err := requiredString(p+".name", m[k], &t.Function.Name, 64); err != nil {
					return nil, err
				}
				if !namePattern.MatchString(t.Function.Name) {
					return nil, apierr.BadRequest(p+".name", codeInvalidValue, "Invalid '%s.name': '%s' does not match '^[a-zA-Z0-9_-]{1,64}$'.", p, truncate(t.Function.Name))
				}
			case "description":
				var d *string
				if err := field(p+".description", m[k], &d); err != nil {
					return nil, err
				}
				if d != nil && len(*d) > maxDescriptionLen {
					return nil, apierr.BadRequest(p+".description", codeInvalidValue, "Invalid '%s.description': longer than %d characters.", p, maxDescriptionLen)
				}
				if d != nil {
					t.Function.Description = *d
				}
			case "parameters":
				if isNull(m[k]) {
					continue
				}
				if _, err := object(p+".parameters", m[k]); err != nil {
					return nil, err
				}
				var buf bytes.Buffer
				if err := json.Compact(&buf, m[k]); err != nil {
					return nil, apierr.BadRequest(p+".parameters", codeInvalidType, "Invalid type for '%s.parameters': expected an object.", p)
				}
				t.Function.Parameters = buf.Bytes()
			case "strict":
				if err := field(p+".strict", m[k], &t.Function.Strict); err != nil {
					return nil, err
				}
			default:
				return nil, unknown(p + "." + k)
			}
		}
		if t.Function.Name == "" {
			return nil, missing(p + ".name")
		}
		if names[t.Function.Name] {
			return nil, apierr.BadRequest(p+".name", codeInvalidValue, "Invalid '%s.name': the tool '%s' is defined twice.", p, t.Function.Name)
		}
		names[t.Function.Name] = true
		tools = append(tools, t)
	}
	return tools, nil
}

// parseToolChoice reads "none" | "auto" | "required" | {type: function, name}.
func parseToolChoice(raw json.RawMessage, tools []task.Tool) (*task.ToolChoice, error) {
	if isNull(raw) {
		return nil, nil
	}
	if isString(raw) {
		var s string
		if err := field("tool_choice", raw, &s); err != nil {
			return nil, err
		}
		switch s {
		case "none", "auto", "required":
		default:
			return nil, apierr.BadRequest("tool_choice", codeInvalidValue, "Invalid value for 'tool_choice': '%s'. Supported values are: 'none', 'auto' and 'required', or a function.", truncate(s))
		}
		if s == "required" && len(tools) == 0 {
			return nil, apierr.BadRequest("tool_choice", codeInvalidValue, "Invalid value for 'tool_choice': 'required' needs at least one tool in 'tools'.")
		}
		return &task.ToolChoice{Mode: s}, nil
	}
	m, err := object("tool_choice", raw)
	if err != nil {
		return nil, err
	}
	var typ, name string
	if err := requiredString("tool_choice.type", m["type"], &typ, 64); err != nil {
		return nil, err
	}
	if typ != "function" {
		return nil, apierr.BadRequest("tool_choice.type", codeUnsupported, "Unsupported value: a 'tool_choice' of type '%s' is not supported by this gateway.", truncate(typ))
	}
	for _, k := range sortedKeys(m) {
		if k != "type" && k != "name" {
			return nil, unknown("tool_choice." + k)
		}
	}
	if err := requiredString("tool_choice.name", m["name"], &name, 64); err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(tools, func(t task.Tool) bool { return t.Function.Name == name }) {
		return nil, apierr.BadRequest("tool_choice.name", codeInvalidValue, "Invalid 'tool_choice.name': no tool named '%s' is in 'tools'.", truncate(name))
	}
	return &task.ToolChoice{Mode: "function", Name: name}, nil
}

// parseText reads text: {format: {type: text | json_object | json_schema
// (name, schema, strict, description)}, verbosity}.
func parseText(raw json.RawMessage, r *Request) error {
	if isNull(raw) {
		return nil
	}
	m, err := object("text", raw)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "format":
		case "verbosity":
			var v *string
			if err := field("text.verbosity", m[k], &v); err != nil {
				return err
			}
			if v != nil && *v != "medium" {
				return unsupported("text.verbosity", "other than 'medium' is not supported by this gateway")
			}
		default:
			return unknown("text." + k)
		}
	}
	if isNull(m["format"]) {
		return nil
	}
	f, err := object("text.format", m["format"])
	if err != nil {
		return err
	}
	var typ string
	if err := requiredString("text.format.type", f["type"], &typ, 64); err != nil {
		return err
	}
	allowed := map[string]bool{"type": true}
	switch typ {
	case task.FormatText, task.FormatJSONObject:
	case task.FormatJSONSchema:
		allowed["name"], allowed["schema"], allowed["strict"], allowed["description"] = true, true, true, true
	default:
		return apierr.BadRequest("text.format.type", codeInvalidValue, "Invalid value for 'text.format.type': '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", truncate(typ))
	}
	for _, k := range sortedKeys(f) {
		if !allowed[k] {
			return unknown("text.format." + k)
		}
	}
	if typ == task.FormatText {
		return nil
	}
	rf := &task.ResponseFormat{Type: typ}
	if typ == task.FormatJSONSchema {
		if err := requiredString("text.format.name", f["name"], &rf.Name, 64); err != nil {
			return err
		}
		if !namePattern.MatchString(rf.Name) {
			return apierr.BadRequest("text.format.name", codeInvalidValue, "Invalid 'text.format.name': '%s' does not match '^[a-zA-Z0-9_-]{1,64}$'.", truncate(rf.Name))
		}
		if isNull(f["schema"]) {
			return missing("text.format.schema")
		}
		if _, err := object("text.format.schema", f["schema"]); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, f["schema"]); err != nil {
			return apierr.BadRequest("text.format.schema", codeInvalidType, "Invalid type for 'text.format.schema': expected an object.")
		}
		rf.Schema = buf.Bytes()
		var strict *bool
		if err := field("text.format.strict", f["strict"], &strict); err != nil && f["strict"] != nil {
			return err
		}
		rf.Strict = strict != nil && *strict
		if d := f["description"]; !isNull(d) {
			if err := field("text.format.description", d, &r.FormatDescription); err != nil {
				return err
			}
			if len(r.FormatDescription) > maxDescriptionLen {
				return apierr.BadRequest("text.format.description", codeInvalidValue, "Invalid 'text.format.description': longer than %d characters.", maxDescriptionLen)
			}
		}
	}
	r.Format = rf
	return nil
}

// parseMetadata reads at most 16 string pairs (keys ≤ 64, values ≤ 512
// characters).
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	if _, err := object("metadata", raw); err != nil {
		return nil, err
	}
	var md map[string]string
	if err := field("metadata", raw, &md); err != nil {
		return nil, apierr.BadRequest("metadata", codeInvalidType, "Invalid type for 'metadata': expected an object of string values.")
	}
	if len(md) > MaxMetadata {
		return nil, apierr.BadRequest("metadata", codeInvalidValue, "Invalid 'metadata': at most %d pairs are allowed, got %d.", MaxMetadata, len(md))
	}
	for k, v := range md {
		if len(k) > maxMetadataKey {
			return nil, apierr.BadRequest("metadata", codeInvalidValue, "Invalid 'metadata': key '%s' is longer than %d characters.", truncate(k), maxMetadataKey)
		}
		if len(v) > maxMetadataValue {
			return nil, apierr.BadRequest("metadata", codeInvalidValue, "Invalid 'metadata': the value of '%s' is longer than %d characters.", truncate(k), maxMetadataValue)
		}
	}
	return md, nil
}

// checkHarmless accepts reasoning, include, truncation and background at
// values that change nothing here, and refuses the rest.
func checkHarmless(reasoning, include, truncation, background json.RawMessage) error {
	if !isNull(reasoning) {
		m, err := object("reasoning", reasoning)
		if err != nil {
			return err
		}
		for _, k := range sortedKeys(m) {
			switch k {
			case "effort", "summary", "generate_summary":
				if !isNull(m[k]) {
					return unsupported("reasoning."+k, "is not supported by this gateway")
				}
			default:
				return unknown("reasoning." + k)
			}
		}
	}
	if !isNull(include) {
		var list []string
		if err := field("include", include, &list); err != nil {
			return err
		}
		for _, v := range list {
			if v != "reasoning.encrypted_content" {
				return apierr.BadRequest("include", codeUnsupported, "Unsupported value: 'include' of '%s' is not supported by this gateway.", truncate(v))
			}
		}
	}
	if !isNull(truncation) {
		var s string
		if err := field("truncation", truncation, &s); err != nil {
			return err
		}
		switch s {
		case "disabled":
		case "auto":
			return apierr.BadRequest("truncation", codeUnsupported, "Unsupported value: 'truncation' of 'auto' is not supported by this gateway; a conversation longer than the model's context is refused.")
		default:
			return apierr.BadRequest("truncation", codeInvalidValue, "Invalid value for 'truncation': '%s'. Supported values are: 'auto' and 'disabled'.", truncate(s))
		}
	}
	if !isNull(background) {
		var b bool
		if err := field("background", background, &b); err != nil {
			return err
		}
		if b {
			return unsupported("background", "is not supported by this gateway")
		}
	}
	return nil
}

func parseStreamOptions(raw json.RawMessage, stream bool) error {
	if isNull(raw) {
		return nil
	}
	m, err := object("stream_options", raw)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(m) {
		if k != "include_obfuscation" {
			return unknown("stream_options." + k)
		}
		var b bool
		if err := field("stream_options."+k, m[k], &b); err != nil {
			return err
		}
	}
	if !stream {
		return apierr.BadRequest("stream_options", codeInvalidValue, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return nil
}
