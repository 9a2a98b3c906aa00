package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// StrictError is a refusal by CheckStrict: Path names the member at fault
// ("tools[0].function.name"; "" for the body as a whole) and Reason says
// what is wrong, lower case and without a final period, for a caller to
// word as "We could not parse the JSON body of your request: <Reason>."
type StrictError struct {
	Path   string
	Reason string
}

func (e *StrictError) Error() string {
	if e.Path == "" {
		return "json: " + e.Reason
	}
	return "json: " + e.Path + ": " + e.Reason
}

// CheckStrict refuses what two JSON parsers could read differently: a
// duplicate key at any depth (encoding/json keeps the last, others the
// first; keys compare after unescaping, so "n\u0061me" repeats "name"),
// trailing data, a body that is not one JSON object, and nesting deeper
// than limit (at most encoding/json's own bound). Every error is a
// *StrictError.
func CheckStrict(body []byte, limit int) error {
	if limit <= 0 || limit > maxDepth {
		limit = maxDepth
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return &StrictError{Reason: "the body is empty. The OpenAI API expects a JSON payload"}
	}
	if body[0] != '{' {
		return &StrictError{Reason: "expected a JSON object"}
	}
	// The common body in one allocation-light pass; anything it is not
	// sure of (a duplicate, an escaped key, odd syntax, deep nesting) goes
	// through the Decoder walk, which alone words the errors.
	if quickStrict(body, limit) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := strictValue(dec, "", 0, limit); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &StrictError{Reason: "trailing data after the JSON object"}
	}
	return nil
}

func strictValue(dec *json.Decoder, path string, depth, limit int) error {
	tok, err := dec.Token()
	if err != nil {
		return badJSON(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= limit {
		return &StrictError{Reason: "nested deeper than " + strconv.Itoa(limit) + " levels"}
	}
	switch d {
	case '{':
		var seen map[string]bool
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return badJSON(err)
			}
			k, _ := kt.(string) // the decoder yields only string keys here
			if seen == nil {
				seen = make(map[string]bool, 8)
			}
			if seen[k] {
				p := joinPath(path, k)
				return &StrictError{Path: p, Reason: "duplicate key '" + p + "'"}
			}
			seen[k] = true
			if err := strictValue(dec, joinPath(path, k), depth+1, limit); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := strictValue(dec, path+"["+strconv.Itoa(i)+"]", depth+1, limit); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return badJSON(err)
	}
	return nil
}

func badJSON(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return &StrictError{Reason: fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return &StrictError{Reason: "unexpected end of JSON input"}
	}
	return &StrictError{Reason: err.Error()}
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// quickStrict reports true only for a body that is one syntactically
// valid JSON object, with no duplicate key at any depth and nesting below
// limit. False means "not sure": CheckStrict then decides.
func quickStrict(body []byte, limit int) bool {
	q := quick{Scanner: Scanner{B: body}, limit: limit}
	return q.Peek() == '{' && q.value(0) && q.End()
}

type quick struct {
	Scanner
	limit int
	keys  [][]byte // the keys of the objects being read, outermost first
}

func (q *quick) value(depth int) bool {
	q.Space()
	switch c := q.Peek(); {
	case c == '{' || c == '[':
		if depth >= q.limit {
			return false
		}
		if c == '[' {
			return q.Array(func() bool { return q.value(depth + 1) })
		}
		return q.object(depth)
	case c == '"':
		return q.skipString()
	case c == 't':
		return q.Lit("true")
	case c == 'f':
		return q.Lit("false")
	case c == 'n':
		return q.Lit("null")
	case c == '-' || c >= '0' && c <= '9':
		_, _, ok := q.Number()
		return ok
	}
	return false
}

// maxLinearKeys is how many keys an object's duplicate check compares
// one by one before it indexes them in a map.
const maxLinearKeys = 16

func (q *quick) object(depth int) bool {
	q.I++ // '{'
	base := len(q.keys)
	defer func() { q.keys = q.keys[:base] }()
	var index map[string]struct{}
	q.Space()
	if q.Peek() == '}' {
		q.I++
		return true
	}
	for {
		q.Space()
		k, ok := q.key()
		if !ok {
			return false
		}
		if index != nil {
			if _, dup := index[string(k)]; dup {
				return false
			}
			index[string(k)] = struct{}{}
		} else {
			for _, seen := range q.keys[base:] {
				if string(seen) == string(k) {
					return false
				}
			}
			q.keys = append(q.keys, k)
			if len(q.keys)-base > maxLinearKeys {
				index = make(map[string]struct{}, 2*maxLinearKeys)
				for _, seen := range q.keys[base:] {
					index[string(seen)] = struct{}{}
				}
			}
		}
		q.Space()
		if q.Peek() != ':' {
			return false
		}
		q.I++
		if !q.value(depth + 1) {
			return false
		}
		q.Space()
		switch q.Peek() {
		case ',':
			q.I++
		case '}':
			q.I++
			return true
		default:
			return false
		}
	}
}

// key reads a key of printable ASCII without escapes (the bytes are then
// the key encoding/json reads); anything else is declined.
func (q *quick) key() ([]byte, bool) {
	b := q.B
	if q.I >= len(b) || b[q.I] != '"' {
		return nil, false
	}
	for i := q.I + 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			k := b[q.I+1 : i]
			q.I = i + 1
			return k, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// skipString passes over a string value, checking its syntax: no raw
// control characters, only JSON's escapes.
func (q *quick) skipString() bool {
	b := q.B
	for i := q.I + 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			q.I = i + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+6 > len(b) {
					return false
				}
				if _, ok := hex4(b[i+2 : i+6]); !ok {
					return false
				}
				i += 5
			default:
				return false
			}
		}
	}
	return false
}
