package jsonx

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckStrict(t *testing.T) {
	ok := []string{
		`{}`, ` {"a":1} `, `{"a":{"b":1},"c":{"b":2}}`, `{"a":[{"k":1},{"k":2}]}`,
		`{"a":1,"A":2}`, // JSON Schema property names may differ only in case
	}
	for _, body := range ok {
		if err := CheckStrict([]byte(body), 0); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	bad := []struct{ body, path, reason string }{
		{``, "", "empty"},
		{`[1]`, "", "expected a JSON object"},
		{`{"a":1}{}`, "", "trailing data"},
		{`{"a":1`, "", "unexpected end"},
		{`{"a":1,"a":2}`, "a", "duplicate key 'a'"},
		{`{"name":1,"n\u0061me":2}`, "name", "duplicate key 'name'"},
		{`{"t":[{"f":{"p":{"type":1,"type":2}}}]}`, "t[0].f.p.type", "duplicate key 't[0].f.p.type'"},
		{strings.Repeat(`{"a":`, 10) + `1` + strings.Repeat(`}`, 10), "", "nested deeper than 8 levels"},
	}
	for _, tc := range bad {
		err := CheckStrict([]byte(tc.body), 8)
		var se *StrictError
		if !errors.As(err, &se) {
			t.Errorf("%q: err = %v, want *StrictError", tc.body, err)
			continue
		}
		if se.Path != tc.path || !strings.Contains(se.Reason, tc.reason) {
			t.Errorf("%q: path %q reason %q, want %q containing %q", tc.body, se.Path, se.Reason, tc.path, tc.reason)
		}
	}
}

func BenchmarkCheckStrict(b *testing.B) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"string"}}}}}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckStrict(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}
