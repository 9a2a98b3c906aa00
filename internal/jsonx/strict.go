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
