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

func TestReadString(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
		n        int
	}{
		{"plain", `"abc" tail`, true, 5},
		{"escapes", `"a\n\"\\\/\b\f\r\t\u00e9"`, true, 25},
		{"empty", `""`, true, 2},
		{"surrogate pair", `"\ud83d\ude42"`, false, 0},
		{"lone surrogate", `"\ud83d"`, false, 0},
		{"bad escape", `"\x"`, false, 0},
		{"raw newline", "\"a\nb\"", false, 0},
		{"invalid utf8", "\"a\xffb\"", false, 0},
		{"unterminated", `"abc`, false, 0},
		{"unterminated escape", `"abc\`, false, 0},
		{"not a string", `abc`, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, n, ok := ReadString([]byte(tc.in))
			if ok != tc.ok || n != tc.n {
				t.Fatalf("ReadString = %q, %d, %v; want n %d, ok %v", v, n, ok, tc.n, tc.ok)
			}
			if !ok {
				return
			}
			var want string
			if err := json.Unmarshal([]byte(tc.in[:n]), &want); err != nil || v != want {
				t.Errorf("read %q, encoding/json reads %q (%v)", v, want, err)
			}
		})
	}
}

func FuzzReadString(f *testing.F) {
	f.Add([]byte(`"a\n\u00e9\"" x`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, ok := ReadString(b)
		if !ok {
			return
		}
		var want string
		if err := json.Unmarshal(b[:n], &want); err != nil || v != want {
			t.Fatalf("%q: read %q, encoding/json reads %q (%v)", b[:n], v, want, err)
		}
	})
}
