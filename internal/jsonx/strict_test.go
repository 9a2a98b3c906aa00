package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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

// quickStrict may decline what is fine, never pass what the Decoder walk
// refuses.
func TestQuickStrictAgrees(t *testing.T) {
	docs := []string{
		`{}`, `{"a":1}`, `{"a":[1,2,{"b":null}],"c":"x\"\\\/\b\f\n\r\t\u00e9"}`, `{"a":1,"a":2}`,
		`{"a":1,"b":{"a":1,"a":2}}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":tru}`, `{"a":"\x"}`,
		`{"a":"\u12"}`, `{"a":[1,]}`, `{,}`, `{"a" 1}`, `{"a":1,}`, `{"a":1}x`, `{"a":"` + "\x01" + `"}`,
		`{"é":1,"é":2}`, `{"a\u0062":1,"ab":2}`, `{"a":"\ud800"}`, `{"a":[]}`, `{"a":{}}`, ` { "a" : [ ] } `,
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":0,"k11":1,"k12":2,"k13":3,"k14":4,"k15":5,"k16":6,"k17":7,"k3":3}`,
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":0,"k11":1,"k12":2,"k13":3,"k14":4,"k15":5,"k16":6,"k17":7,"k18":3}`,
		`{"a":1e5,"b":-0.5E-3,"c":true,"d":false}`, `{"a":"` + "\xff" + `"}`,
	}
	for _, d := range docs {
		b := []byte(d)
		if !quickStrict(b, maxDepth) {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		err := strictValue(dec, "", 0, maxDepth)
		if err == nil {
			if _, e := dec.Token(); e != io.EOF {
				err = e
			}
		}
		if err != nil {
			t.Errorf("%q: quick passed, Decoder walk: %v", d, err)
		}
	}
	for _, d := range []string{`{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}`} {
		if !quickStrict([]byte(d), maxDepth) {
			t.Errorf("%s: declined by the quick pass", d)
		}
	}
}
