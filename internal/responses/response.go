package responses

import (
	"encoding/json"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Response is OpenAI's response object (field order as OpenAI writes it).
type Response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"` // "response"
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"` // in_progress, completed, incomplete, failed
	Background         bool               `json:"background"`
	Error              *ResponseError     `json:"error"`
	IncompleteDetails  *IncompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []OutputItem       `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Reasoning          Reasoning          `json:"reasoning"`
	Store              bool               `json:"store"`
	Temperature        float64            `json:"temperature"`
	Text               TextConfig         `json:"text"`
	ToolChoice         json.RawMessage    `json:"tool_choice"`
	Tools              []FunctionTool     `json:"tools"`
	TopP               float64            `json:"top_p"`
	Truncation         string             `json:"truncation"`
	Usage              *Usage             `json:"usage"`
	User               *string            `json:"user"`
	Metadata           map[string]string  `json:"metadata"`
}

// Response statuses.
const (
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusIncomplete = "incomplete"
	StatusFailed     = "failed"
)

// ResponseError is a failed response's error.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IncompleteDetails says why a response is incomplete.
type IncompleteDetails struct {
	Reason string `json:"reason"` // "max_output_tokens"
}

// Reasoning is the (empty) reasoning configuration echoed back.
type Reasoning struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

// TextConfig is the text configuration echoed back.
type TextConfig struct {
	Format    Format `json:"format"`
	Verbosity string `json:"verbosity"`
}

// Format is text.format as echoed back.
type Format struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// FunctionTool is a tool as echoed back (the flat Responses shape).
type FunctionTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// Usage is the Responses API's token accounting.
type Usage struct {
	InputTokens         int                 `json:"input_tokens"`
	InputTokensDetails  InputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int                 `json:"output_tokens"`
	OutputTokensDetails OutputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int                 `json:"total_tokens"`
}

// InputTokensDetails breaks input tokens down.
type InputTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// OutputTokensDetails breaks output tokens down.
type OutputTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// NewUsage converts the worker's usage.
func NewUsage(u *task.Usage) *Usage {
	if u == nil {
		return &Usage{}
	}
	return &Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.PromptTokens + u.CompletionTokens}
}

// OutputItem is one item of a response's output: a message or a function
// call.
type OutputItem struct {
	ID        string       `json:"id"`
	Type      string       `json:"type"` // ItemMessage or ItemFunctionCall
	Status    string       `json:"status"`
	Role      string       `json:"role,omitempty"`
	Content   []OutputText `json:"content,omitempty"`
	CallID    string       `json:"call_id,omitempty"`
	Name      string       `json:"name,omitempty"`
	Arguments string       `json:"arguments,omitempty"`
}

// OutputText is a message's text content part.
type OutputText struct {
	Type        string `json:"type"` // "output_text"
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

func newOutputText(text string) OutputText {
	return OutputText{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}
}

// MarshalJSON writes each item type with exactly its fields: a message's
// content even when empty (the SDKs append parts to it), a function
// call's arguments even when empty.
func (o OutputItem) MarshalJSON() ([]byte, error) {
	if o.Type == ItemFunctionCall {
		return json.Marshal(struct {
			ID        string `json:"id"`
			Type      string `json:"type"`
			Status    string `json:"status"`
			Arguments string `json:"arguments"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
		}{o.ID, o.Type, o.Status, o.Arguments, o.CallID, o.Name})
	}
	content := o.Content
	if content == nil {
		content = []OutputText{}
	}
	return json.Marshal(struct {
		ID      string       `json:"id"`
		Type    string       `json:"type"`
		Status  string       `json:"status"`
		Content []OutputText `json:"content"`
		Role    string       `json:"role"`
	}{o.ID, o.Type, o.Status, content, o.Role})
}

// NewResponse is the in-progress response of a request: its parameters
// echoed, no output yet.
func NewResponse(r *Request, id string, createdAt int64) *Response {
	resp := &Response{
		ID: id, Object: "response", CreatedAt: createdAt, Status: StatusInProgress, Model: r.Model,
		Instructions: r.Instructions, MaxOutputTokens: r.MaxOutputTokens, Output: []OutputItem{},
		ParallelToolCalls: r.ParallelToolCalls == nil || *r.ParallelToolCalls, Store: r.Store,
		Temperature: 1, TopP: 1, Truncation: "disabled", Tools: []FunctionTool{},
		Text:     TextConfig{Format: Format{Type: task.FormatText}, Verbosity: "medium"},
		Metadata: map[string]string{},
	}
	if r.Temperature != nil {
		resp.Temperature = *r.Temperature
	}
	if r.TopP != nil {
		resp.TopP = *r.TopP
	}
	if r.PreviousResponseID != "" {
		resp.PreviousResponseID = &r.PreviousResponseID
	}
	if r.User != "" {
		resp.User = &r.User
	}
	for k, v := range r.Metadata {
		resp.Metadata[k] = v
	}
	for _, t := range r.Tools {
		ft := FunctionTool{Type: "function", Name: t.Function.Name, Parameters: t.Function.Parameters, Strict: t.Function.Strict}
		if t.Function.Description != "" {
			d := t.Function.Description
			ft.Description = &d
		}
		resp.Tools = append(resp.Tools, ft)
	}
	resp.ToolChoice = json.RawMessage(`"auto"`)
	if c := r.ToolChoice; c != nil {
		if c.Mode == "function" {
			resp.ToolChoice, _ = json.Marshal(map[string]string{"type": "function", "name": c.Name})
		} else {
			resp.ToolChoice, _ = json.Marshal(c.Mode)
		}
	}
	if f := r.Format; f != nil {
		resp.Text.Format = Format{Type: f.Type, Name: f.Name, Description: r.FormatDescription, Schema: f.Schema}
		if f.Type == task.FormatJSONSchema {
			strict := f.Strict
			resp.Text.Format.Strict = &strict
		}
	}
	return resp
}
