package openai

import (
	"strconv"

	"github.com/tollgate-ai/tollgate/internal/jsonx"
)

// fastChat decodes and validates the common chat body — the members SDKs
// send (model, messages of role/content/name strings, max_tokens,
// max_completion_tokens, temperature, top_p, n, seed, stop, stream,
// stream_options.include_usage, presence_penalty, frequency_penalty, user),
// no nulls, each at most once — without encoding/json. It reports false
// for anything else, and for any body that would fail validation, leaving
// ParseChat's general path to decode it and word the error: what is
// accepted, and how, never depends on which path ran.
func fastChat(body []byte, lim Limits) (*ChatRequest, bool) {
	p := chatScanner{jsonx.Scanner{B: body}}
	r := &ChatRequest{}
	var seen [15]bool
	hasModel, hasMessages := false, false
	ok := p.Object(func(key string) bool {
		switch key {
		case "model":
			hasModel = true
			return jsonx.Once(&seen[0]) && p.str(&r.Model)
		case "messages":
			hasMessages = true
			return jsonx.Once(&seen[1]) && p.messages(&r.Messages, lim.MaxMessages)
		case "max_tokens":
			return jsonx.Once(&seen[2]) && p.optInt(&r.MaxTokens)
		case "max_completion_tokens":
			return jsonx.Once(&seen[3]) && p.optInt(&r.MaxCompletionTokens)
		case "temperature":
			return jsonx.Once(&seen[4]) && p.optFloat(&r.Temperature)
		case "top_p":
			return jsonx.Once(&seen[5]) && p.optFloat(&r.TopP)
		case "n":
			return jsonx.Once(&seen[6]) && p.optInt(&r.N)
		case "seed":
			var n *int
			if !jsonx.Once(&seen[7]) || !p.optInt(&n) {
				return false
			}
			v := int64(*n)
			r.Seed = &v
			return true
		case "stop":
			return jsonx.Once(&seen[8]) && p.stop(&r.Stop)
		case "stream":
			return jsonx.Once(&seen[9]) && p.boolean(&r.Stream)
		case "stream_options":
			return jsonx.Once(&seen[10]) && p.streamOptions(&r.StreamOptions)
		case "presence_penalty":
			return jsonx.Once(&seen[11]) && p.optFloat(&r.PresencePenalty)
		case "frequency_penalty":
			return jsonx.Once(&seen[12]) && p.optFloat(&r.FrequencyPenalty)
		case "user":
			return jsonx.Once(&seen[13]) && p.str(&r.User)
		}
		return false
	})
	if !ok || !p.End() || !hasModel || !hasMessages {
		return nil, false
	}
	// The same checks as the general path; any failure goes back to it.
	switch {
	case r.Model == "" || len(r.Model) > 256:
		return nil, false
	case len(r.Messages) == 0:
		return nil, false
	case r.MaxTokens != nil && r.MaxCompletionTokens != nil:
		return nil, false
	}
	for i := range r.Messages {
		if checkMessage(i, &r.Messages[i]) != nil {
			return nil, false
		}
	}
	if checkMaxTokens("max_tokens", r.MaxTokens, lim) != nil ||
		checkMaxTokens("max_completion_tokens", r.MaxCompletionTokens, lim) != nil ||
		checkSampling(r.Temperature, r.TopP, r.N, MaxChoices, r.PresencePenalty, r.FrequencyPenalty, r.Stop) != nil ||
		checkStreamOptions(r.Stream, r.StreamOptions) != nil {
		return nil, false
	}
	return r, true
}

// chatScanner reads the shapes fastChat accepts; every method reports
// false to hand the body to the general path.
type chatScanner struct{ jsonx.Scanner }

func (p *chatScanner) str(dst *string) bool {
	v, ok := p.String()
	*dst = v
	return ok
}

func (p *chatScanner) boolean(dst *bool) bool {
	v, ok := p.Bool()
	*dst = v
	return ok
}

// optInt reads an integer as encoding/json reads it into *int (no nulls).
func (p *chatScanner) optInt(dst **int) bool {
	lit, integer, ok := p.Number()
	if !ok || !integer {
		return false
	}
	n, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
	if err != nil {
		return false
	}
	v := int(n)
	*dst = &v
	return true
}

// optFloat reads a number as encoding/json reads it into *float64.
func (p *chatScanner) optFloat(dst **float64) bool {
	lit, _, ok := p.Number()
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return false
	}
	*dst = &f
	return true
}

// stop reads a string or an array of strings.
func (p *chatScanner) stop(dst *StringList) bool {
	if p.Peek() == '"' {
		var s string
		if !p.str(&s) {
			return false
		}
		*dst = StringList{s}
		return true
	}
	list := StringList{}
	ok := p.Array(func() bool {
		var s string
		if !p.str(&s) {
			return false
		}
		list = append(list, s)
		return true
	})
	*dst = list
	return ok
}

// streamOptions reads {"include_usage": bool} and nothing else.
func (p *chatScanner) streamOptions(dst **StreamOptions) bool {
	so := &StreamOptions{}
	seen := false
	ok := p.Object(func(key string) bool {
		return key == "include_usage" && jsonx.Once(&seen) && p.boolean(&so.IncludeUsage)
	})
	*dst = so
	return ok
}

// messages reads an array of {role, content, name} string members.
func (p *chatScanner) messages(dst *[]ChatMessage, max int) bool {
	msgs := make([]ChatMessage, 0, 4)
	ok := p.Array(func() bool {
		if len(msgs) == max {
			return false
		}
		var m ChatMessage
		var seen [3]bool
		if !p.Object(func(key string) bool {
			switch key {
			case "role":
				return jsonx.Once(&seen[0]) && p.str(&m.Role)
			case "content":
				var text string
				if !jsonx.Once(&seen[1]) || !p.str(&text) {
					return false
				}
				m.Content = &Content{Text: text}
				return true
			case "name":
				return jsonx.Once(&seen[2]) && p.str(&m.Name)
			}
			return false
		}) {
			return false
		}
		msgs = append(msgs, m)
		return true
	})
	*dst = msgs
	return ok
}
