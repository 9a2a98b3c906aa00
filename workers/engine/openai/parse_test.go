package openai

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

var sseCases = []struct {
	name string
	in   string
	want []string
	err  bool
}{
	{"openai style", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []string{`{"a":1}`, "[DONE]"}, false},
	{"no space, CRLF", "data:{\"a\":1}\r\n\r\n", []string{`{"a":1}`}, false},
	{"comments and fields skipped", ": ping\n\nevent: message\nid: 3\nretry: 10\ndata: x\n\n", []string{"x"}, false},
	{"multi-line data joined", "data: a\ndata: b\n\n", []string{"a\nb"}, false},
	{"trailing event without blank line", "data: last", []string{"last"}, false},
	{"oversized line", "data: " + strings.Repeat("y", 300) + "\n\n", nil, true},
	{"oversized event from many lines", strings.Repeat("data: "+strings.Repeat("z", 60)+"\n", 5) + "\n", nil, true},
	{"llama.cpp error field", "error: {\"code\":400,\"message\":\"too long\"}\n\ndata: [DONE]\n\n", []string{`{"code":400,"message":"too long"}`, "[DONE]"}, false},
	{"event error", "event: error\ndata: {\"message\":\"boom\"}\n\n", []string{`{"message":"boom"}`}, false},
}

// TestSSEErrorReports: an `error:` field or an `event: error` marks its
// event as an error report, and only that event.
func TestSSEErrorReports(t *testing.T) {
	in := "data: {\"a\":1}\n\nerror: {\"code\":400}\n\nevent: error\ndata: {\"b\":2}\n\nevent: message\ndata: {\"c\":3}\n\ndata: x\nerror: {\"d\":4}\n\n"
	r := newSSEReader(strings.NewReader(in), 256, nil)
	var got []string
	for {
		d, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %v", d, r.failed()))
	}
	want := []string{`{"a":1} false`, `{"code":400} true`, `{"b":2} true`, `{"c":3} false`, `{"d":4} true`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func readAll(in string, max int) ([]string, error) {
	r := newSSEReader(strings.NewReader(in), max, nil)
	var out []string
	for {
		d, err := r.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(d))
	}
}

func TestSSEReader(t *testing.T) {
	for _, tc := range sseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.in, 256)
			if tc.err {
				if !errors.Is(err, errEventTooLarge) {
					t.Fatalf("err %v, want errEventTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzSSEReader(f *testing.F) {
	for _, tc := range sseCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, _ := readAll(in, 256)
		for _, d := range got {
			if len(d) > 256 {
				t.Fatalf("event of %d bytes passed a 256-byte bound", len(d))
			}
		}
	})
}

var errorBodyCases = []struct {
	name string
	body string
	want upstreamError
}{
	{"openai", `{"error":{"message":"bad","type":"invalid_request_error","param":"max_tokens","code":"too_big"}}`,
		upstreamError{Message: "bad", Type: "invalid_request_error", Param: "max_tokens", Code: "too_big"}},
	{"vllm numeric code", `{"error":{"message":"no model","type":"NotFoundError","param":null,"code":404}}`,
		upstreamError{Message: "no model", Type: "NotFoundError"}},
	{"old vllm", `{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}`,
		upstreamError{Message: "too long", Type: "BadRequestError"}},
	{"llama.cpp string error", `{"error":"model is loading"}`, upstreamError{Message: "model is loading"}},
	{"fastapi detail", `{"detail":"Not Found"}`, upstreamError{Message: "Not Found"}},
	{"plain text", "upstream connect error\n", upstreamError{Message: "upstream connect error"}},
	{"invalid utf8 dropped", "bad \xff bytes", upstreamError{Message: "bad  bytes"}},
}

func TestParseErrorBody(t *testing.T) {
	for _, tc := range errorBodyCases {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, parseErrorBody([]byte(tc.body))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	long := parseErrorBody(bytes.Repeat([]byte("é"), 4*maxMessageBytes))
	if len(long.Message) > maxMessageBytes+len("…") || !utf8.ValidString(long.Message) {
		t.Errorf("long message not bounded to valid UTF-8: %d bytes", len(long.Message))
	}
}

func FuzzParseErrorBody(f *testing.F) {
	for _, tc := range errorBodyCases {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		u := parseErrorBody([]byte(body))
		if len(u.Message) > maxMessageBytes+len("…") || !utf8.ValidString(u.Message) {
			t.Fatalf("message not bounded: %q", u.Message)
		}
		e := statusError(400, "", []byte(body))
		if e.Status != 400 || e.Message == "" || !openAITypes[e.Type] {
			t.Fatalf("mapped to %+v", e)
		}
	})
}
