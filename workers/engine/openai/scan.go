package openai

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// upstreamEvent is what the engine reads from one streamed chunk or one
// non-streamed answer of /chat/completions or /completions: choice 0's
// text and finish reason, the usage and any error object.
type upstreamEvent struct {
	Choices []upstreamChoice `json:"choices"`
	Usage   *usage           `json:"usage"`
	Error   json.RawMessage  `json:"error"`
}

type upstreamChoice struct {
	Index int `json:"index"`
	Delta struct {
		Content *string `json:"content"`
	} `json:"delta"` // streamed chat
	Message struct {
		Content *string `json:"content"`
	} `json:"message"` // non-streamed chat
	Text         *string `json:"text"` // completions
	FinishReason *string `json:"finish_reason"`
}

// decodeUpstream decodes data into ev. A scanner handles the shapes
// servers send (it reads every byte and checks JSON syntax as it goes);
// whatever it does not handle exactly as encoding/json would — a key that
// differs only in case, a repeated key, a number that is not a plain
// integer, an unexpected type, a string with escapes it does not decode —
// goes to encoding/json, so the result and the errors never depend on
// which path ran.
func decodeUpstream(data []byte, ev *upstreamEvent) error {
	s := upScanner{b: data}
	if s.event(ev) {
		return nil
	}
	*ev = upstreamEvent{}
	return json.Unmarshal(data, ev)
}

// upScanner is a strict, minimal JSON reader for upstreamEvent. Every
// method reports false to hand the document to encoding/json.
type upScanner struct {
	b     []byte
	i     int
	depth int
}

// maxScanDepth bounds nesting as encoding/json does (it refuses deeper
// documents), so a hostile event cannot recurse without limit.
const maxScanDepth = 10000

func (s *upScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *upScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *upScanner) event(ev *upstreamEvent) bool {
	var seen [3]bool
	ok := s.object(func(key string) bool {
		switch key {
		case "choices":
			return once(&seen[0]) && s.choices(&ev.Choices)
		case "usage":
			return once(&seen[1]) && s.usage(&ev.Usage)
		case "error":
			start := s.i
			if !once(&seen[2]) || !s.skip() {
				return false
			}
			ev.Error = append(json.RawMessage(nil), s.b[start:s.i]...)
			return true
		}
		return !foldsTo(key, "choices", "usage", "error") && s.skip()
	})
	if !ok {
		return false
	}
	s.ws()
	return s.i == len(s.b)
}

func once(seen *bool) bool {
	if *seen {
		return false
	}
	*seen = true
	return true
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

// object reads an object, calling member with the reader at each value.
func (s *upScanner) object(member func(key string) bool) bool {
	s.ws()
	if s.peek() != '{' {
		return false
	}
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	defer func() { s.depth-- }()
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !member(key) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *upScanner) null() bool {
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

func (s *upScanner) choices(out *[]upstreamChoice) bool {
	if s.null() {
		return true
	}
	if s.peek() != '[' {
		return false
	}
	s.i++
	*out = make([]upstreamChoice, 0, 1)
	s.ws()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		s.ws()
		var c upstreamChoice
		if !s.choice(&c) {
			return false
		}
		*out = append(*out, c)
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *upScanner) choice(c *upstreamChoice) bool {
	var seen [5]bool
	return s.object(func(key string) bool {
		switch key {
		case "index":
			return once(&seen[0]) && s.int(&c.Index)
		case "delta":
			return once(&seen[1]) && s.content(&c.Delta.Content)
		case "message":
			return once(&seen[2]) && s.content(&c.Message.Content)
		case "text":
			return once(&seen[3]) && s.optStr(&c.Text)
		case "finish_reason":
			return once(&seen[4]) && s.optStr(&c.FinishReason)
		}
		return !foldsTo(key, "index", "delta", "message", "text", "finish_reason") && s.skip()
	})
}

// content reads a delta or message object for its content string.
func (s *upScanner) content(dst **string) bool {
	if s.null() {
		return true
	}
	seen := false
	return s.object(func(key string) bool {
		if key == "content" {
			return once(&seen) && s.optStr(dst)
		}
		return !foldsTo(key, "content") && s.skip()
	})
}

func (s *upScanner) usage(dst **usage) bool {
	if s.null() {
		*dst = nil
		return true
	}
	u := &usage{}
	var seen [2]bool
	ok := s.object(func(key string) bool {
		switch key {
		case "prompt_tokens":
			return once(&seen[0]) && s.int(&u.PromptTokens)
		case "completion_tokens":
			return once(&seen[1]) && s.int(&u.CompletionTokens)
		}
		return !foldsTo(key, "prompt_tokens", "completion_tokens") && s.skip()
	})
	*dst = u
	return ok
}

// optStr reads a string or null into a *string.
func (s *upScanner) optStr(dst **string) bool {
	if s.null() {
		*dst = nil
		return true
	}
	v, ok := s.str()
	if !ok {
		return false
	}
	*dst = &v
	return true
}

// int reads a plain JSON integer of at most 15 digits (null leaves dst).
func (s *upScanner) int(dst *int) bool {
	if s.null() {
		return true
	}
	neg := s.peek() == '-'
	if neg {
		s.i++
	}
	digits := s.i
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int(s.b[s.i]-'0')
		s.i++
	}
	switch d := s.i - digits; {
	case d == 0 || d > 15:
		return false
	case s.b[digits] == '0' && d > 1:
		return false
	}
	if c := s.peek(); c == '.' || c == 'e' || c == 'E' {
		return false
	}
	if neg {
		n = -n
	}
	*dst = n
	return true
}

// str reads a string without escapes and with valid UTF-8 (anything else
// is left to encoding/json, which unescapes and replaces bad bytes).
func (s *upScanner) str() (string, bool) {
	if s.peek() != '"' {
		return "", false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[start:j]
			if !utf8.Valid(v) {
				return "", false
			}
			s.i = j + 1
			return string(v), true
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

// skip passes over one value of any type, checking its syntax.
func (s *upScanner) skip() bool {
	s.ws()
	switch c := s.peek(); {
	case c == '{':
		return s.object(func(string) bool { return s.skip() })
	case c == '[':
		if s.depth++; s.depth > maxScanDepth {
			return false
		}
		defer func() { s.depth-- }()
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			return true
		}
		for {
			if !s.skip() {
				return false
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return s.skipStr()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return false
}

func (s *upScanner) lit(l string) bool {
	if len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return true
	}
	return false
}

// skipStr passes over a string, escapes included, checking them.
func (s *upScanner) skipStr() bool {
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if len(s.b)-s.i < 6 {
					return false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				s.i += 6
			default:
				return false
			}
		default:
			s.i++
		}
	}
	return false
}

// number passes over a number in JSON's grammar.
func (s *upScanner) number() bool {
	if s.peek() == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	first := s.i
	n := digits()
	if n == 0 || n > 1 && s.b[first] == '0' {
		return false
	}
	if s.peek() == '.' {
		s.i++
		if digits() == 0 {
			return false
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
