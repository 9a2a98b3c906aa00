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
	p := chatScanner{b: body}
	r := &ChatRequest{}
	var seen [15]bool
	hasModel, hasMessages := false, false
	ok := p.object(func(key string) bool {
		switch key {
		case "model":
			hasModel = true
			return once(&seen[0]) && p.str(&r.Model)
		case "messages":
			hasMessages = true
			return once(&seen[1]) && p.messages(&r.Messages, lim.MaxMessages)
		case "max_tokens":
			return once(&seen[2]) && p.optInt(&r.MaxTokens)
		case "max_completion_tokens":
			return once(&seen[3]) && p.optInt(&r.MaxCompletionTokens)
		case "temperature":
			return once(&seen[4]) && p.optFloat(&r.Temperature)
		case "top_p":
			return once(&seen[5]) && p.optFloat(&r.TopP)
		case "n":
			return once(&seen[6]) && p.optInt(&r.N)
		case "seed":
			var n *int
			if !once(&seen[7]) || !p.optInt(&n) {
				return false
			}
			v := int64(*n)
			r.Seed = &v
			return true
		case "stop":
			return once(&seen[8]) && p.stop(&r.Stop)
		case "stream":
			return once(&seen[9]) && p.boolean(&r.Stream)
		case "stream_options":
			return once(&seen[10]) && p.streamOptions(&r.StreamOptions)
		case "presence_penalty":
			return once(&seen[11]) && p.optFloat(&r.PresencePenalty)
		case "frequency_penalty":
			return once(&seen[12]) && p.optFloat(&r.FrequencyPenalty)
		case "user":
			return once(&seen[13]) && p.str(&r.User)
		}
		return false
	})
	if !ok || !p.end() || !hasModel || !hasMessages {
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
		checkSampling(r.Temperature, r.TopP, r.N, r.PresencePenalty, r.FrequencyPenalty, r.Stop) != nil ||
		checkStreamOptions(r.Stream, r.StreamOptions) != nil {
		return nil, false
	}
	return r, true
}

func once(seen *bool) bool {
	if *seen {
		return false
	}
	*seen = true
	return true
}

// chatScanner reads the shapes fastChat accepts; every method reports
// false to hand the body to the general path.
type chatScanner struct {
	b []byte
	i int
}

func (p *chatScanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *chatScanner) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *chatScanner) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// object reads an object, calling member with the reader at each value.
func (p *chatScanner) object(member func(key string) bool) bool {
	p.ws()
	if p.peek() != '{' {
		return false
	}
	p.i++
	p.ws()
	if p.peek() == '}' {
		p.i++
		return true
	}
	for {
		p.ws()
		var key string
		if !p.str(&key) {
			return false
		}
		p.ws()
		if p.peek() != ':' {
			return false
		}
		p.i++
		p.ws()
		if !member(key) {
			return false
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// array reads an array, calling elem with the reader at each element.
func (p *chatScanner) array(elem func() bool) bool {
	if p.peek() != '[' {
		return false
	}
	p.i++
	p.ws()
	if p.peek() == ']' {
		p.i++
		return true
	}
	for {
		p.ws()
		if !elem() {
			return false
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return true
		default:
			return false
		}
	}
}

func (p *chatScanner) str(dst *string) bool {
	v, n, ok := jsonx.ReadString(p.b[p.i:])
	if !ok {
		return false
	}
	*dst, p.i = v, p.i+n
	return true
}

func (p *chatScanner) boolean(dst *bool) bool {
	switch {
	case p.lit("true"):
		*dst = true
	case p.lit("false"):
		*dst = false
	default:
		return false
	}
	return true
}

func (p *chatScanner) lit(l string) bool {
	if len(p.b)-p.i >= len(l) && string(p.b[p.i:p.i+len(l)]) == l {
		p.i += len(l)
		return true
	}
	return false
}

// number returns the literal of a JSON number and whether it is a plain
// integer (no fraction or exponent).
func (p *chatScanner) number() (lit []byte, integer bool, ok bool) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	first := p.i
	n := digits()
	if n == 0 || n > 1 && p.b[first] == '0' {
		return nil, false, false
	}
	integer = true
	if p.peek() == '.' {
		p.i++
		integer = false
		if digits() == 0 {
			return nil, false, false
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		integer = false
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if digits() == 0 {
			return nil, false, false
		}
	}
	return p.b[start:p.i], integer, true
}

// optInt reads an integer as encoding/json reads it into *int (no nulls).
func (p *chatScanner) optInt(dst **int) bool {
	lit, integer, ok := p.number()
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
	lit, _, ok := p.number()
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
	if p.peek() == '"' {
		var s string
		if !p.str(&s) {
			return false
		}
		*dst = StringList{s}
		return true
	}
	list := StringList{}
	ok := p.array(func() bool {
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
	ok := p.object(func(key string) bool {
		return key == "include_usage" && once(&seen) && p.boolean(&so.IncludeUsage)
	})
	*dst = so
	return ok
}

// messages reads an array of {role, content, name} string members.
func (p *chatScanner) messages(dst *[]ChatMessage, max int) bool {
	msgs := make([]ChatMessage, 0, 4)
	ok := p.array(func() bool {
		if len(msgs) == max {
			return false
		}
		var m ChatMessage
		var seen [3]bool
		if !p.object(func(key string) bool {
			switch key {
			case "role":
				return once(&seen[0]) && p.str(&m.Role)
			case "content":
				var text string
				if !once(&seen[1]) || !p.str(&text) {
					return false
				}
				m.Content = &Content{Text: text}
				return true
			case "name":
				return once(&seen[2]) && p.str(&m.Name)
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
