package ids

import (
	"slices"
	"strings"
	"testing"
	"time"
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

// TestOrderedSortsByTime: IDs made at later milliseconds sort after earlier
// ones byte by byte (what keeps the stores' B-tree inserts at the right
// edge), whatever their random parts, and keep New's length and alphabet.
func TestOrderedSortsByTime(t *testing.T) {
	base := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	var got []string
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, time.Second, time.Hour, 24 * 365 * time.Hour, 30 * 24 * 365 * time.Hour} {
		for range 50 {
			id := Ordered("rcpt_", base.Add(d))
			if !strings.HasPrefix(id, "rcpt_") || len(id) != 5+Len || strings.Trim(id[5:], sorted) != "" {
				t.Fatalf("Ordered = %q: want rcpt_ + %d base32 characters", id, Len)
			}
			got = append(got, id[:5+timeLen])
		}
	}
	if !slices.IsSorted(got) {
		t.Fatalf("time prefixes not in time order: %q", got)
	}
	if a, b := Ordered("", base), Ordered("", base); a[:timeLen] != b[:timeLen] || a == b {
		t.Fatalf("same millisecond: %q and %q should share the time part and differ after it", a, b)
	}
	if id := Ordered("", time.Unix(0, 0).Add(-time.Hour)); id[:timeLen] != strings.Repeat("2", timeLen) {
		t.Fatalf("a time before 1970 = %q, want the zero time part", id)
	}
}

// TestOrderedRandomPart: the 16 characters after the time are random (80
// bits): no two of many IDs made in one millisecond are equal, and every
// character position takes many values.
func TestOrderedRandomPart(t *testing.T) {
	at := time.Now()
	seen := map[string]bool{}
	perPos := make([]map[byte]bool, Len-timeLen)
	for i := range perPos {
		perPos[i] = map[byte]bool{}
	}
	for range 2000 {
		r := Ordered("", at)[timeLen:]
		if seen[r] {
			t.Fatalf("random part repeated: %q", r)
		}
		seen[r] = true
		for i := range len(r) {
			perPos[i][r[i]] = true
		}
	}
	for i, m := range perPos {
		if len(m) < 28 {
			t.Fatalf("random position %d took only %d of 32 values in 2,000 IDs", i, len(m))
		}
	}
}

func TestReceiptIsOrdered(t *testing.T) {
	a := Receipt()
	time.Sleep(2 * time.Millisecond)
	b := Receipt()
	if a[:5+timeLen] >= b[:5+timeLen] {
		t.Fatalf("receipt IDs %q then %q: not in time order", a, b)
	}
}

// TestRequestCarriesNoTime: a request ID goes to the worker that runs the
// request and, unchanged (it is in the request digest), to the workers an
// audit re-executes it on. A creation time in it would tell them its age,
// and an audit arrives after the original finished, seconds or minutes
// old, where traffic is milliseconds old: the re-executing worker could
// tell an audit from traffic (docs/audit.md). So request IDs stay fully
// random: two made back to back share no time prefix.
func TestRequestCarriesNoTime(t *testing.T) {
	shared := 0
	for range 20 {
		a, b := Request(), Request()
		if !strings.HasPrefix(a, "req_") || len(a) != 4+Len || strings.Trim(a[4:], sorted) != "" {
			t.Fatalf("Request() = %q: want req_ + %d base32 characters", a, Len)
		}
		if a[:4+8] == b[:4+8] { // 40 bits: 2^-40 by chance
			shared++
		}
	}
	if shared > 0 {
		t.Fatalf("%d of 20 pairs of request IDs made back to back share their first 8 characters: they carry their creation time", shared)
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
