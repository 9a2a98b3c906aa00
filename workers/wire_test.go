package workers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

var wireEvents = []struct {
	name string
	ev   task.Event
}{
	{"delta", task.Event{Index: 3, Type: task.EventDelta, Text: "hello", Tokens: 1}},
	{"delta escapes", task.Event{Index: 0, Type: task.EventDelta, Text: "a\"b\\c\nd\re\tf\bg\fh\x01i\x1f<>&", Tokens: 2}},
	{"delta unicode", task.Event{Type: task.EventDelta, Text: "héllo 世界 🙂 \u2028\u2029", Tokens: 3}},
	{"delta invalid utf8", task.Event{Type: task.EventDelta, Text: "bad\xff\xfeutf8", Tokens: 1}},
	{"delta no tokens", task.Event{Index: 1, Type: task.EventDelta, Text: "x"}},
	{"delta no text", task.Event{Index: 1, Type: task.EventDelta, Tokens: 4}},
	{"delta negative tokens", task.Event{Index: 1, Type: task.EventDelta, Text: "x", Tokens: -2}},
	{"done", task.Event{Index: 2, Type: task.EventDone, FinishReason: "length",
		Usage: &task.Usage{PromptTokens: 12, CompletionTokens: 16},
		Completion: &task.Completion{RequestID: "req-1", WorkerID: "w", Model: "m", ModelDigest: strings.Repeat("a", 64),
			RequestDigest: strings.Repeat("b", 64), ResponseDigest: strings.Repeat("c", 64), Subject: "key\"1",
			PromptTokens: 12, CompletionTokens: 16, Time: time.Date(2026, 11, 22, 3, 4, 5, 123456789, time.UTC)}}},
	{"done no subject, zone", task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{},
		Completion: &task.Completion{RequestID: "r", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600+1800))}}},
	{"done with the record's finish reason", task.Event{Index: 2, Type: task.EventDone, FinishReason: "length", Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 3},
		Completion: &task.Completion{RequestID: "r", PromptTokens: 1, CompletionTokens: 3, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), FinishReason: "length"}}},
	{"done ended early", task.Event{Type: task.EventDone, FinishReason: task.FinishCancelled, Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 3},
		Completion: &task.Completion{RequestID: "r", CompletionTokens: 3, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), FinishReason: task.FinishCancelled},
		Error:      &task.EventError{Status: 499, Type: "invalid_request_error", Code: "cancelled", Message: "the request was cancelled"}}},
	{"embeddings", task.Event{Index: 1, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 2},
		Embeddings: [][]float32{{0.5, -1.25e-7}, {3}}, Completion: &task.Completion{RequestID: "e"}}},
	{"error", task.Event{Index: 4, Type: task.EventFailed, Error: &task.EventError{Status: 499, Type: "invalid_request_error", Code: "cancelled", Param: "p", Message: "the \"request\" was cancelled"}}},
	{"error minimal", task.Event{Type: task.EventFailed, Error: &task.EventError{Status: 500, Message: "boom"}}},
}

// TestAppendEventMatchesEncodingJSON checks the hand-rolled encoder against
// encoding/json: the same value decodes from both.
func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	for _, tc := range wireEvents {
		t.Run(tc.name, func(t *testing.T) {
			line, err := appendEvent(nil, &tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			if !json.Valid(line) {
				t.Fatalf("invalid JSON: %s", line)
			}
			want, err := json.Marshal(&tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			var got, ref task.Event
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &ref); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, ref); diff != "" {
				t.Errorf("decoded (-appendEvent +encoding/json):\n%s", diff)
			}
		})
	}
}

// TestAppendEventRefusesWhatJSONRefuses: a time encoding/json cannot write
// is an error, not a line the gateway would refuse.
func TestAppendEventRefusesWhatJSONRefuses(t *testing.T) {
	ev := task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{},
		Completion: &task.Completion{RequestID: "r", Time: time.Date(12345, 1, 2, 3, 4, 5, 0, time.UTC)}}
	if _, err := appendEvent(nil, &ev); err == nil {
		t.Fatal("appendEvent accepted a year encoding/json refuses")
	}
}

// TestDecodeEventRoundTrip checks that what the worker writes the gateway
// reads back unchanged, whichever decoding path takes it.
func TestDecodeEventRoundTrip(t *testing.T) {
	for _, tc := range wireEvents {
		t.Run(tc.name, func(t *testing.T) {
			line, err := appendEvent(nil, &tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			var got, ref task.Event
			if err := decodeEvent(line, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(line, &ref); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, ref); diff != "" {
				t.Errorf("(-decodeEvent +encoding/json):\n%s", diff)
			}
		})
	}
}

func TestDecodeDeltaFastPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		fast bool // decodeDelta takes it (else encoding/json does)
	}{
		{"plain", `{"i":1,"t":"delta","text":"hi","tokens":1}` + "\n", true},
		{"escapes", `{"i":0,"t":"delta","text":"a\nb\"c\u00e9\/","tokens":1}`, true},
		{"no text", `{"i":0,"t":"delta","tokens":1}`, true},
		{"spaces around", "  {\"i\":0,\"t\":\"delta\"}\r\n", true},
		{"surrogate pair", `{"i":0,"t":"delta","text":"\ud83d\ude42","tokens":1}`, false},
		{"other order", `{"t":"delta","i":0,"text":"x"}`, false},
		{"unknown key", `{"i":0,"t":"delta","text":"x","extra":1}`, false},
		{"done", `{"i":0,"t":"done"}`, false},
		{"float index", `{"i":1.0,"t":"delta"}`, false},
		{"leading zero", `{"i":01,"t":"delta"}`, false},
		{"huge index", `{"i":12345678901,"t":"delta"}`, false},
		{"raw control char", "{\"i\":0,\"t\":\"delta\",\"text\":\"a\x01\"}", false},
		{"invalid utf8", "{\"i\":0,\"t\":\"delta\",\"text\":\"a\xff\"}", false},
		{"bad escape", `{"i":0,"t":"delta","text":"\x41"}`, false},
		{"trailing data", `{"i":0,"t":"delta"} {}`, false},
		{"unterminated", `{"i":0,"t":"delta","text":"abc`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fast task.Event
			if got := decodeDelta([]byte(tc.line), &fast); got != tc.fast {
				t.Fatalf("decodeDelta = %v, want %v", got, tc.fast)
			}
			var viaJSON task.Event
			jerr := json.Unmarshal([]byte(tc.line), &viaJSON)
			if tc.fast {
				if jerr != nil {
					t.Fatalf("fast path took a line encoding/json refuses: %v", jerr)
				}
				if diff := cmp.Diff(fast, viaJSON); diff != "" {
					t.Errorf("(-fast +encoding/json):\n%s", diff)
				}
			}
		})
	}
}

// FuzzDecodeEvent checks that the fast path never accepts a line that
// encoding/json refuses, nor reads one differently.
func FuzzDecodeEvent(f *testing.F) {
	for _, tc := range wireEvents {
		line, _ := appendEvent(nil, &tc.ev)
		f.Add(line)
	}
	f.Add([]byte(`{"i":0,"t":"delta","text":"\u00e9\n","tokens":-1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast task.Event
		if !decodeDelta(line, &fast) && !decodeDone(line, &fast) {
			return
		}
		var ref task.Event
		if err := json.Unmarshal(line, &ref); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses: %v", line, err)
		}
		if diff := cmp.Diff(fast, ref); diff != "" {
			t.Fatalf("%q (-fast +encoding/json):\n%s", line, diff)
		}
	})
}

// FuzzAppendEvent checks that any delta text survives the link.
func FuzzAppendEvent(f *testing.F) {
	f.Add("hello", 1)
	f.Add("a\"\\\n\x00\xff\u2028", -3)
	f.Fuzz(func(t *testing.T, text string, tokens int) {
		ev := task.Event{Index: 7, Type: task.EventDelta, Text: text, Tokens: tokens}
		line, err := appendEvent(nil, &ev)
		if err != nil {
			t.Fatal(err)
		}
		var got, ref task.Event
		if err := decodeEvent(line, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		want, _ := json.Marshal(&ev)
		if err := json.Unmarshal(want, &ref); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, ref); diff != "" {
			t.Fatalf("(-link +encoding/json):\n%s", diff)
		}
	})
}

func TestDecodeDoneFastPath(t *testing.T) {
	done := func(t time.Time, subject string) string {
		ev := task.Event{Index: 2, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 3, CompletionTokens: 4},
			Completion: &task.Completion{RequestID: "r\"1", WorkerID: "w", Model: "m", ModelDigest: strings.Repeat("a", 64),
				RequestDigest: strings.Repeat("b", 64), ResponseDigest: strings.Repeat("c", 64), Subject: subject,
				PromptTokens: 3, CompletionTokens: 4, Time: t}}
		line, _ := appendEvent(nil, &ev)
		return string(line)
	}
	t0 := time.Date(2026, 11, 22, 3, 4, 5, 120000000, time.UTC)
	for _, tc := range []struct {
		name string
		line string
		fast bool
	}{
		{"as written", done(t0, "key"), true},
		{"no subject", done(t0, ""), true},
		{"offset zone", done(t0.In(time.FixedZone("", -7*3600)), "key"), true},
		{"non-canonical time", strings.Replace(done(t0, "k"), "03:04:05.12Z", "03:04:05.120Z", 1), false},
		{"unknown field", strings.Replace(done(t0, "k"), `"model":"m"`, `"model":"m","x":1`, 1), false},
		{"no usage", `{"i":0,"t":"done","finish_reason":"stop","completion":{}}`, false},
		{"embeddings", `{"i":0,"t":"done","finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":0},"embeddings":[[1]]}`, false},
		{"trailing", done(t0, "k") + "x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fast task.Event
			if got := decodeDone([]byte(tc.line), &fast); got != tc.fast {
				t.Fatalf("decodeDone = %v, want %v for %s", got, tc.fast, tc.line)
			}
			if !tc.fast {
				return
			}
			var ref task.Event
			if err := json.Unmarshal([]byte(tc.line), &ref); err != nil {
				t.Fatalf("fast path took a line encoding/json refuses: %v", err)
			}
			if diff := cmp.Diff(fast, ref); diff != "" {
				t.Errorf("(-fast +encoding/json):\n%s", diff)
			}
		})
	}
}
