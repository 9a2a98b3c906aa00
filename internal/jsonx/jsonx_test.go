package jsonx

import (
	"encoding/json"
	"testing"
)

func TestAppendString(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"plain", "hello world"},
		{"empty", ""},
		{"quotes and backslash", `a"b\c`},
		{"controls", "\n\r\t\b\f\x00\x01\x1f\x7f"},
		{"html", "<a href='x'>&amp;</a>"},
		{"unicode", "héllo 世界 🙂"},
		{"line separators", "a\u2028b\u2029c"},
		{"invalid utf8", "bad\xff\xfe\xc3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendString([]byte("x"), tc.in)
			if got[0] != 'x' {
				t.Fatal("prefix lost")
			}
			var back string
			if err := json.Unmarshal(got[1:], &back); err != nil {
				t.Fatalf("%s: %v", got[1:], err)
			}
			want, _ := json.Marshal(tc.in)
			var ref string
			_ = json.Unmarshal(want, &ref)
			if back != ref {
				t.Errorf("decodes to %q, encoding/json's to %q", back, ref)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a\"\\\n\x00\xff\u2028<>&")
	f.Fuzz(func(t *testing.T, s string) {
		var back, ref string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		want, _ := json.Marshal(s)
		_ = json.Unmarshal(want, &ref)
		if back != ref {
			t.Fatalf("%q decodes to %q, encoding/json's to %q", s, back, ref)
		}
	})
}
