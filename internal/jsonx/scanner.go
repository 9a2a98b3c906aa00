package jsonx

// Scanner is the strict, minimal JSON reader under the hot path's fast
// decoders (the common chat body, upstream chunks and answers, worker
// events). Every method reports false on anything it does not read
// exactly as encoding/json would; the caller then hands the whole
// document to encoding/json, so a Scanner never decides which error a
// client sees. Nesting is bounded as encoding/json bounds it.
//
// A decoder embeds a Scanner and walks its own shapes with these steps;
// each step starts at the current position (Object and Array skip leading
// white space themselves).
type Scanner struct {
	B     []byte // the document
	I     int    // the read position in B
	depth int
}

// maxDepth bounds nesting as encoding/json does (it refuses deeper
// documents), so a hostile document cannot recurse without limit.
const maxDepth = 10000

// Space skips JSON white space.
func (s *Scanner) Space() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Peek returns the byte at the read position, or 0 at the end.
func (s *Scanner) Peek() byte {
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// End reports whether only white space is left.
func (s *Scanner) End() bool {
	s.Space()
	return s.I == len(s.B)
}

// Lit reads the literal l (true, false, null, or any fixed text).
func (s *Scanner) Lit(l string) bool {
	if len(s.B)-s.I >= len(l) && string(s.B[s.I:s.I+len(l)]) == l {
		s.I += len(l)
		return true
	}
	return false
}

// String reads a string (see ReadString for what it declines).
func (s *Scanner) String() (string, bool) {
	v, n, ok := ReadString(s.B[s.I:])
	if !ok {
		return "", false
	}
	s.I += n
	return v, true
}

// Bool reads true or false.
func (s *Scanner) Bool() (v, ok bool) {
	switch {
	case s.Lit("true"):
		return true, true
	case s.Lit("false"):
		return false, true
	}
	return false, false
}

// Number reads a number in JSON's grammar and returns its literal and
// whether it is a plain integer (no fraction or exponent).
func (s *Scanner) Number() (lit []byte, integer, ok bool) {
	start := s.I
	if s.Peek() == '-' {
		s.I++
	}
	digits := func() int {
		n := 0
		for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
			s.I++
			n++
		}
		return n
	}
	first := s.I
	n := digits()
	if n == 0 || n > 1 && s.B[first] == '0' {
		return nil, false, false
	}
	integer = true
	if s.Peek() == '.' {
		s.I++
		integer = false
		if digits() == 0 {
			return nil, false, false
		}
	}
	if c := s.Peek(); c == 'e' || c == 'E' {
		s.I++
		integer = false
		if c := s.Peek(); c == '+' || c == '-' {
			s.I++
		}
		if digits() == 0 {
			return nil, false, false
		}
	}
	return s.B[start:s.I], integer, true
}

// Int reads a plain integer (no fraction or exponent) of at most
// maxDigits digits (at most 18, so that it fits an int64); a longer one is
// declined for encoding/json to judge.
func (s *Scanner) Int(maxDigits int) (int, bool) {
	lit, integer, ok := s.Number()
	if !ok || !integer {
		return 0, false
	}
	digits := lit
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) > min(maxDigits, 18) {
		return 0, false
	}
	n := 0
	for _, c := range digits {
		n = n*10 + int(c-'0')
	}
	if lit[0] == '-' {
		n = -n
	}
	return n, true
}

// Object reads an object, calling member with the read position at each
// member's value (white space skipped); member must read the value.
func (s *Scanner) Object(member func(key string) bool) bool {
	s.Space()
	if s.Peek() != '{' || !s.enter() {
		return false
	}
	defer s.leave()
	s.I++
	s.Space()
	if s.Peek() == '}' {
		s.I++
		return true
	}
	for {
		s.Space()
		key, ok := s.String()
		if !ok {
			return false
		}
		s.Space()
		if s.Peek() != ':' {
			return false
		}
		s.I++
		s.Space()
		if !member(key) {
			return false
		}
		s.Space()
		switch s.Peek() {
		case ',':
			s.I++
		case '}':
			s.I++
			return true
		default:
			return false
		}
	}
}

// Array reads an array, calling elem with the read position at each
// element (white space skipped); elem must read the element.
func (s *Scanner) Array(elem func() bool) bool {
	s.Space()
	if s.Peek() != '[' || !s.enter() {
		return false
	}
	defer s.leave()
	s.I++
	s.Space()
	if s.Peek() == ']' {
		s.I++
		return true
	}
	for {
		s.Space()
		if !elem() {
			return false
		}
		s.Space()
		switch s.Peek() {
		case ',':
			s.I++
		case ']':
			s.I++
			return true
		default:
			return false
		}
	}
}

// Skip passes over one value of any type, checking its syntax.
func (s *Scanner) Skip() bool {
	s.Space()
	switch c := s.Peek(); {
	case c == '{':
		return s.Object(func(string) bool { return s.Skip() })
	case c == '[':
		return s.Array(s.Skip)
	case c == '"':
		_, ok := s.String()
		return ok
	case c == 't':
		return s.Lit("true")
	case c == 'f':
		return s.Lit("false")
	case c == 'n':
		return s.Lit("null")
	case c == '-' || c >= '0' && c <= '9':
		_, _, ok := s.Number()
		return ok
	}
	return false
}

func (s *Scanner) enter() bool {
	s.depth++
	if s.depth > maxDepth {
		s.depth--
		return false
	}
	return true
}

func (s *Scanner) leave() { s.depth-- }

// Once reports whether *seen was false and sets it: a member named twice
// makes a fast decoder decline (encoding/json keeps the last one).
func Once(seen *bool) bool {
	if *seen {
		return false
	}
	*seen = true
	return true
}
