package openai

import (
	"encoding/json"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/jsonx"
)

// upstreamEvent is what the engine reads from one streamed chunk or one
// non-streamed answer of /chat/completions or /completions: choice 0's
// text and finish reason, the usage and any error object.
type upstreamEvent struct {
	Choices []upstreamChoice `json:"choices"`
	Usage   *usage           `json:"usage"`
	Error   json.RawMessage  `json:"error"`
	// Object is "error" for older vLLM's top-level ErrorResponse.
	Object string `json:"object"`
}

type upstreamChoice struct {
	Index        int             `json:"index"`
	Delta        upstreamMsg     `json:"delta"`   // streamed chat
	Message      upstreamMsg     `json:"message"` // non-streamed chat
	Text         *string         `json:"text"`    // completions
	FinishReason *string         `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs"`
}

// upstreamMsg is a delta or a message: its content and tool calls.
type upstreamMsg struct {
	Content   *string            `json:"content"`
	ToolCalls []upstreamToolCall `json:"tool_calls"`
}

// decodeUpstream decodes data into ev. A scanner handles the shapes
// servers send (it reads every byte and checks JSON syntax as it goes);
// whatever it does not handle exactly as encoding/json would — a key that
// differs only in case, a repeated key, a number that is not a plain
// integer, an unexpected type, a string with escapes it does not decode —
// goes to encoding/json, so the result and the errors never depend on
// which path ran.
func decodeUpstream(data []byte, ev *upstreamEvent) error {
	s := upScanner{jsonx.Scanner{B: data}}
	if s.event(ev) {
		return nil
	}
	*ev = upstreamEvent{}
	return json.Unmarshal(data, ev)
}

// upScanner reads upstreamEvent's shapes on jsonx.Scanner. Every method
// reports false to hand the document to encoding/json.
type upScanner struct{ jsonx.Scanner }

func (s *upScanner) event(ev *upstreamEvent) bool {
	var seen [4]bool
	ok := s.Object(func(key string) bool {
		switch key {
		case "object":
			if !jsonx.Once(&seen[3]) {
				return false
			}
			if s.Lit("null") {
				return true
			}
			v, ok := s.String()
			ev.Object = v
			return ok
		case "choices":
			return jsonx.Once(&seen[0]) && s.choices(&ev.Choices)
		case "usage":
			return jsonx.Once(&seen[1]) && s.usage(&ev.Usage)
		case "error":
			start := s.I
			if !jsonx.Once(&seen[2]) || !s.Skip() {
				return false
			}
			ev.Error = append(json.RawMessage(nil), s.B[start:s.I]...)
			return true
		}
		return !foldsTo(key, "choices", "usage", "error", "object") && s.Skip()
	})
	return ok && s.End()
}

// foldsTo reports whether key would match one of names under
// encoding/json's case-insensitive field matching.
func foldsTo(key string, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(key, n) {
			return true
		}
	}
	return false
}

func (s *upScanner) choices(out *[]upstreamChoice) bool {
	if s.Lit("null") {
		return true
	}
	*out = make([]upstreamChoice, 0, 1)
	return s.Array(func() bool {
		var c upstreamChoice
		if !s.choice(&c) {
			return false
		}
		*out = append(*out, c)
		return true
	})
}

func (s *upScanner) choice(c *upstreamChoice) bool {
	var seen [5]bool
	return s.Object(func(key string) bool {
		switch key {
		case "index":
			return jsonx.Once(&seen[0]) && s.int(&c.Index)
		case "delta":
			return jsonx.Once(&seen[1]) && s.content(&c.Delta)
		case "message":
			return jsonx.Once(&seen[2]) && s.content(&c.Message)
		case "text":
			return jsonx.Once(&seen[3]) && s.optStr(&c.Text)
		case "finish_reason":
			return jsonx.Once(&seen[4]) && s.optStr(&c.FinishReason)
		case "logprobs":
			if !s.Lit("null") {
				return false // any logprobs go to encoding/json
			}
			c.Logprobs = json.RawMessage("null") // as encoding/json stores it
			return true
		}
		return !foldsTo(key, "index", "delta", "message", "text", "finish_reason", "logprobs") && s.Skip()
	})
}

// content reads a delta or message object for its content string.
func (s *upScanner) content(m *upstreamMsg) bool {
	if s.Lit("null") {
		return true
	}
	seen := false
	return s.Object(func(key string) bool {
		switch key {
		case "content":
			return jsonx.Once(&seen) && s.optStr(&m.Content)
		case "tool_calls":
			switch {
			case s.Lit("null"):
				m.ToolCalls = nil
			case s.Lit("[]"):
				m.ToolCalls = []upstreamToolCall{}
			default:
				return false // any calls go to encoding/json
			}
			return true
		}
		return !foldsTo(key, "content", "tool_calls") && s.Skip()
	})
}

func (s *upScanner) usage(dst **usage) bool {
	if s.Lit("null") {
		*dst = nil
		return true
	}
	u := &usage{}
	var seen [2]bool
	ok := s.Object(func(key string) bool {
		switch key {
		case "prompt_tokens":
			return jsonx.Once(&seen[0]) && s.int(&u.PromptTokens)
		case "completion_tokens":
			return jsonx.Once(&seen[1]) && s.int(&u.CompletionTokens)
		}
		return !foldsTo(key, "prompt_tokens", "completion_tokens") && s.Skip()
	})
	*dst = u
	return ok
}

// optStr reads a string or null into a *string.
func (s *upScanner) optStr(dst **string) bool {
	if s.Lit("null") {
		*dst = nil
		return true
	}
	v, ok := s.String()
	if !ok {
		return false
	}
	*dst = &v
	return true
}

// int reads a plain JSON integer of at most 15 digits (null leaves dst).
func (s *upScanner) int(dst *int) bool {
	if s.Lit("null") {
		return true
	}
	n, ok := s.Int(15)
	if ok {
		*dst = n
	}
	return ok
}
