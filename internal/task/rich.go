package task

import (
	"encoding/json"
	"fmt"
)

// The richer parts of a chat request: tools, structured output, logprobs,
// several choices and multimodal content. The gateway validates their
// shape; engines that speak OpenAI pass them to their upstream verbatim,
// the built-in engine serves what its Capabilities say (structured output
// by constrained decoding), and a request needing a capability a model
// lacks is refused before dispatch (see ModelVersion.Capabilities).

// Capability names a feature of a model version beyond plain text
// generation. Workers declare them per model at registration; the
// scheduler routes a task only to a worker whose model has every
// capability the task needs (Task.Needs).
type Capability string

const (
	CapTools      Capability = "tools"       // tools, tool_choice, tool messages
	CapJSONObject Capability = "json_object" // response_format json_object
	CapJSONSchema Capability = "json_schema" // response_format json_schema
	CapLogprobs   Capability = "logprobs"    // logprobs, top_logprobs
	CapN          Capability = "n"           // n > 1 in one engine call
	CapVision     Capability = "vision"      // image_url content parts
	CapAudio      Capability = "audio"       // input_audio content parts
	CapDimensions Capability = "dimensions"  // embeddings of a requested length
)

// KnownCapabilities lists every capability a registration may declare.
var KnownCapabilities = []Capability{CapTools, CapJSONObject, CapJSONSchema, CapLogprobs, CapN, CapVision, CapAudio, CapDimensions}

// Tool is one entry of a request's tools array (type "function").
type Tool struct {
	Type     string      `json:"type"`
	Function FunctionDef `json:"function"`
}

// FunctionDef describes a callable function. Parameters is a JSON Schema,
// kept as the client sent it (compacted).
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolChoice is a request's tool_choice: Mode "none", "auto", "required",
// or "function" with Name the function that must be called.
type ToolChoice struct {
	Mode string `json:"mode"`
	Name string `json:"name,omitempty"`
}

// ToolCall is a complete tool call: in an assistant message of the
// history, or in a finished answer.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function a tool call names and its arguments (a JSON
// text, as generated).
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolCallDelta is a piece of a streamed tool call, as OpenAI streams
// them: the first piece of call Index carries its ID, Type and Name, later
// ones fragments of Arguments.
type ToolCallDelta struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Type      string `json:"type,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// ResponseFormat is a request's response_format: Type "text" (the
// default, never stored), "json_object", or "json_schema" with the schema's
// Name, its Schema (compacted JSON) and Strict.
type ResponseFormat struct {
	Type   string          `json:"type"`
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict bool            `json:"strict,omitempty"`
}

// Response format types.
const (
	FormatText       = "text"
	FormatJSONObject = "json_object"
	FormatJSONSchema = "json_schema"
)

// FinishToolCalls is the finish reason of a generation that ended by
// calling tools.
const FinishToolCalls = "tool_calls"

// Needs lists the capabilities a task needs of the model that runs it.
func (t *Task) Needs() []Capability {
	var need []Capability
	if len(t.Tools) > 0 || hasToolHistory(t.Messages) {
		need = append(need, CapTools)
	}
	if f := t.ResponseFormat; f != nil {
		switch f.Type {
		case FormatJSONObject:
			need = append(need, CapJSONObject)
		case FormatJSONSchema:
			need = append(need, CapJSONSchema)
		}
	}
	if t.Logprobs || t.TopLogprobs > 0 {
		need = append(need, CapLogprobs)
	}
	if t.N > 1 {
		need = append(need, CapN)
	}
	if t.Dimensions > 0 {
		need = append(need, CapDimensions)
	}
	vision, audio := partKinds(t.Messages)
	if vision {
		need = append(need, CapVision)
	}
	if audio {
		need = append(need, CapAudio)
	}
	return need
}

// Has reports whether the model version declares capability c.
func (m *ModelVersion) Has(c Capability) bool {
	for _, x := range m.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

func hasToolHistory(msgs []Message) bool {
	for i := range msgs {
		if len(msgs[i].ToolCalls) > 0 || msgs[i].ToolCallID != "" || msgs[i].Role == "tool" {
			return true
		}
	}
	return false
}

// partKinds reports whether any message carries image or audio parts.
func partKinds(msgs []Message) (vision, audio bool) {
	for i := range msgs {
		if len(msgs[i].Parts) == 0 {
			continue
		}
		var parts []struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(msgs[i].Parts, &parts) != nil {
			continue // validated by the gateway; a worker checks its own copy
		}
		for _, p := range parts {
			switch p.Type {
			case "image_url":
				vision = true
			case "input_audio":
				audio = true
			}
		}
	}
	return vision, audio
}

// imageParts counts the image_url parts of msgs.
func imageParts(msgs []Message) int {
	n := 0
	for i := range msgs {
		if len(msgs[i].Parts) == 0 {
			continue
		}
		var parts []struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(msgs[i].Parts, &parts) != nil {
			continue
		}
		for _, p := range parts {
			if p.Type == "image_url" {
				n++
			}
		}
	}
	return n
}

// CheckToolCall reports why an answer of t may not call function name: a
// task without tools, tool_choice "none", a name the request did not
// declare, or one other than the function tool_choice forces.
func (t *Task) CheckToolCall(name string) error {
	if len(t.Tools) == 0 {
		return fmt.Errorf("tool call %q for a task without tools", name)
	}
	if c := t.ToolChoice; c != nil {
		switch c.Mode {
		case "none":
			return fmt.Errorf("tool call %q under tool_choice none", name)
		case "function":
			if name != c.Name {
				return fmt.Errorf("tool call %q where tool_choice names %q", name, c.Name)
			}
		}
	}
	for i := range t.Tools {
		if t.Tools[i].Function.Name == name {
			return nil
		}
	}
	return fmt.Errorf("tool call %q names no function of the request", name)
}
