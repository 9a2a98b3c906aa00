package jsonx

import (
	"encoding/json"
	"strings"
	"testing"
)

var scanDocs = []struct {
	name string
	doc  string
	ok   bool // Skip then End accept it
}{
	{"object", `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, true},
	{"spaces", " { \"a\" : [ 1 , -2.5e+3 ] } \n", true},
	{"empty containers", `{"a":{},"b":[]}`, true},
	{"escaped string", `"a\nb\u00e9\"c"`, true},
	{"number", `-0.5E-7`, true},
	{"leading zero", `01`, false},
	{"bare minus", `-`, false},
	{"trailing comma", `[1,]`, false},
	{"missing colon", `{"a" 1}`, false},
	{"unterminated", `{"a":"b`, false},
	{"bad literal", `nul`, false},
	{"surrogate pair", `"\ud83d\ude42"`, false}, // declined: encoding/json pairs them
	{"too deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), false},
	{"trailing garbage", `{} x`, false},
}

func TestScannerSkip(t *testing.T) {
	for _, tc := range scanDocs {
		t.Run(tc.name, func(t *testing.T) {
			s := Scanner{B: []byte(tc.doc)}
			if got := s.Skip() && s.End(); got != tc.ok {
				t.Errorf("Skip+End = %v, want %v", got, tc.ok)
			}
		})
	}
}

func TestScannerInt(t *testing.T) {
	for _, tc := range []struct {
		in     string
		digits int
		want   int
		ok     bool
	}{
		{"0", 9, 0, true},
		{"-42", 9, -42, true},
		{"123456789", 9, 123456789, true},
		{"1234567890", 9, 0, false},
		{"1.0", 9, 0, false},
		{"1e3", 9, 0, false},
		{"007", 9, 0, false},
		{"999999999999999999999", 30, 0, false}, // capped at 18 digits
	} {
		s := Scanner{B: []byte(tc.in)}
		got, ok := s.Int(tc.digits)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("Int(%q, %d) = %d, %v; want %d, %v", tc.in, tc.digits, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzScannerSkip: the scanner never accepts a document encoding/json
// rejects (it may decline valid ones, which then go to encoding/json).
func FuzzScannerSkip(f *testing.F) {
	for _, tc := range scanDocs {
		f.Add([]byte(tc.doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		s := Scanner{B: doc}
		if s.Skip() && s.End() && !json.Valid(doc) {
			t.Errorf("scanner accepted invalid JSON %q", doc)
		}
	})
}
