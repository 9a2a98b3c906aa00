// Package schematest validates JSON documents against the JSON Schema
// subset of jsongrammar, independently of its recogniser, so tests can
// check generated output against the schema itself.
package schematest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Validate reports whether doc is one JSON value satisfying schema.
func Validate(schema, doc []byte) error {
	var s any
	if err := json.Unmarshal(schema, &s); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if !json.Valid(doc) {
		return fmt.Errorf("not valid JSON: %q", doc)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	return (&validator{root: s}).check(s, v, "$", 0)
}

type validator struct{ root any }

func (vd *validator) check(s, v any, at string, depth int) error {
	if depth > 200 {
		return fmt.Errorf("%s: too deep", at)
	}
	switch s := s.(type) {
	case bool:
		if !s {
			return fmt.Errorf("%s: schema false", at)
		}
		return nil
	case map[string]any:
		return vd.checkObj(s, v, at, depth)
	}
	return fmt.Errorf("%s: bad schema", at)
}

func (vd *validator) checkObj(s map[string]any, v any, at string, depth int) error {
	if ref, ok := s["$ref"].(string); ok {
		target := vd.root
		for _, tok := range strings.Split(strings.TrimPrefix(ref, "#"), "/")[1:] {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			m, _ := target.(map[string]any)
			target = m[tok]
		}
		if err := vd.check(target, v, at, depth+1); err != nil {
			return err
		}
	}
	for _, kw := range []string{"anyOf", "oneOf"} {
		if list, ok := s[kw].([]any); ok {
			var errs []string
			ok := false
			for _, alt := range list {
				if err := vd.check(alt, v, at, depth+1); err == nil {
					ok = true
					break
				} else {
					errs = append(errs, err.Error())
				}
			}
			if !ok {
				return fmt.Errorf("%s: no %s branch matches: %s", at, kw, strings.Join(errs, "; "))
			}
		}
	}
	if c, ok := s["const"]; ok && !equal(c, v) {
		return fmt.Errorf("%s: %v is not the const %v", at, v, c)
	}
	if list, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range list {
			if equal(e, v) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v is not in enum %v", at, v, list)
		}
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		match := false
		for _, ty := range types {
			if typeOf(v, ty) {
				match = true
			}
		}
		if !match {
			return fmt.Errorf("%s: %v is not of type %v", at, v, types)
		}
	}
	switch v := v.(type) {
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		if x, ok := num(s["minimum"]); ok && f < x {
			return fmt.Errorf("%s: %v below minimum %v", at, f, x)
		}
		if x, ok := num(s["maximum"]); ok && f > x {
			return fmt.Errorf("%s: %v above maximum %v", at, f, x)
		}
		if x, ok := num(s["exclusiveMinimum"]); ok && f <= x {
			return fmt.Errorf("%s: %v not above exclusiveMinimum %v", at, f, x)
		}
		if x, ok := num(s["exclusiveMaximum"]); ok && f >= x {
			return fmt.Errorf("%s: %v not below exclusiveMaximum %v", at, f, x)
		}
		if b, _ := s["exclusiveMinimum"].(bool); b {
			if x, ok := num(s["minimum"]); ok && f <= x {
				return fmt.Errorf("%s: %v not above minimum %v", at, f, x)
			}
		}
		if b, _ := s["exclusiveMaximum"].(bool); b {
			if x, ok := num(s["maximum"]); ok && f >= x {
				return fmt.Errorf("%s: %v not below maximum %v", at, f, x)
			}
		}
	case string:
		n := utf8.RuneCountInString(v)
		if x, ok := num(s["minLength"]); ok && float64(n) < x {
			return fmt.Errorf("%s: %d characters, minLength %v", at, n, x)
		}
		if x, ok := num(s["maxLength"]); ok && float64(n) > x {
			return fmt.Errorf("%s: %d characters, maxLength %v", at, n, x)
		}
	case []any:
		if x, ok := num(s["minItems"]); ok && float64(len(v)) < x {
			return fmt.Errorf("%s: %d items, minItems %v", at, len(v), x)
		}
		if x, ok := num(s["maxItems"]); ok && float64(len(v)) > x {
			return fmt.Errorf("%s: %d items, maxItems %v", at, len(v), x)
		}
		prefix, _ := s["prefixItems"].([]any)
		for i, item := range v {
			sub := s["items"]
			if i < len(prefix) {
				sub = prefix[i]
			}
			if sub == nil {
				continue
			}
			if err := vd.check(sub, item, fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, k := range req {
				if _, ok := v[k.(string)]; !ok {
					return fmt.Errorf("%s: required %q missing", at, k)
				}
			}
		}
		for k, val := range v {
			sub, ok := props[k]
			if !ok {
				switch a := s["additionalProperties"].(type) {
				case bool:
					if !a {
						return fmt.Errorf("%s: additional property %q", at, k)
					}
					continue
				case map[string]any:
					sub = a
				default:
					continue
				}
			}
			if err := vd.check(sub, val, at+"."+k, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func num(x any) (float64, bool) {
	f, ok := x.(float64)
	return f, ok
}

func typeOf(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		f, err := n.Float64()
		return err == nil && f == math.Trunc(f)
	}
	return false
}

// equal compares a schema value (float64 numbers) with a document value
// (json.Number numbers).
func equal(a, b any) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = normalize(x)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = normalize(x)
		}
		return out
	}
	return v
}
