package ids

import (
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := Receipt()
		if !strings.HasPrefix(id, "rcpt_") || len(id) != 5+Len {
			t.Fatalf("Receipt() = %q", id)
		}
		if strings.Trim(id[5:], "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("Receipt() = %q has characters outside base32", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestValidRequestID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", false},
		{"simple", "abc-123", true},
		{"space inside", "a b", true},
		{"max length", strings.Repeat("x", 128), true},
		{"too long", strings.Repeat("x", 129), false},
		{"newline", "a\nb", false},
		{"del", "a\x7f", false},
		{"non-ascii", "héllo", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidRequestID(tc.in); got != tc.want {
				t.Errorf("ValidRequestID(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzValidRequestID(f *testing.F) {
	for _, s := range []string{"", "abc", "a\nb", strings.Repeat("x", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidRequestID(s) && (len(s) > 128 || strings.ContainsAny(s, "\r\n\x00")) {
			t.Fatalf("accepted %q", s)
		}
	})
}
