package openai

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/jsonx"
)

var upstreamDocs = []struct {
	name    string
	doc     string
	scanned bool // the scanner reads it itself (else encoding/json does)
}{
	{"older vllm error object", `{"object":"error","message":"bad","type":"BadRequestError","param":null,"code":400}`, true},
	{"sglang error", `{"error":{"object":"error","message":"bad","type":"BadRequestError","param":null,"code":400}}`, true},
	{"vllm chat chunk", `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}`, true},
	{"role chunk", `{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}`, true},
	{"finish chunk", `{"choices":[{"index":0,"delta":{},"finish_reason":"length","stop_reason":null}]}`, true},
	{"usage chunk", `{"id":"x","choices":[],"usage":{"prompt_tokens":12,"total_tokens":28,"completion_tokens":16,"prompt_tokens_details":null}}`, true},
	{"completion chunk", `{"choices":[{"text":"abc","index":0,"logprobs":null,"finish_reason":null}],"system_fingerprint":null}`, true},
	{"whole chat answer", ` {"id":"chatcmpl-mock","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello world","tool_calls":[]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}` + "\n", true},
	{"numbers and nesting skipped", `{"a":[1,-2.5e+3,0,true,false,null,{"b":[[]],"c":{}}],"choices":[{"index":1,"text":"x"},{"index":0,"text":"y"}]}`, true},
	{"error object", `{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}`, true},
	{"null error", `{"choices":null,"error":null}`, true},
	{"escapes in skipped strings", `{"id":"a\"b\\c\u00e9\n","choices":[{"index":0,"delta":{"content":"ok"}}]}`, true},
	{"escape in content", `{"choices":[{"index":0,"delta":{"content":"a\nb \u00e9\"q\""}}]}`, true},
	{"surrogates in content", `{"choices":[{"index":0,"delta":{"content":"\ud83d\ude42"}}]}`, false},
	{"key in other case", `{"Choices":[{"index":0,"text":"x"}]}`, false},
	{"repeated key", `{"choices":[],"choices":[{"index":0,"text":"x"}]}`, false},
	{"float index", `{"choices":[{"index":0.0,"text":"x"}]}`, false},
	{"string index", `{"choices":[{"index":"0","text":"x"}]}`, false},
	{"content not a string", `{"choices":[{"index":0,"delta":{"content":5}}]}`, false},
	{"usage float", `{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}`, false},
	{"trailing garbage", `{"choices":[]} x`, false},
	{"truncated", `{"choices":[{"index":0,"delta":{"content":"x"`, false},
	{"bad number in skipped field", `{"created":01,"choices":[]}`, false},
	{"bad literal", `{"x":nul,"choices":[]}`, false},
	{"raw control char", "{\"id\":\"a\x01\",\"choices\":[]}", false},
	{"invalid utf8 content", "{\"choices\":[{\"index\":0,\"text\":\"a\xff\"}]}", false},
	{"not an object", `[1,2]`, false},
	{"deep nesting", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), false},
}

// TestDecodeUpstreamMatchesEncodingJSON: whichever path decodes a
// document, the value and the error-ness are encoding/json's.
func TestDecodeUpstreamMatchesEncodingJSON(t *testing.T) {
	for _, tc := range upstreamDocs {
		t.Run(tc.name, func(t *testing.T) {
			s := upScanner{jsonx.Scanner{B: []byte(tc.doc)}}
			var scanned upstreamEvent
			if got := s.event(&scanned); got != tc.scanned {
				t.Errorf("scanner took it: %v, want %v", got, tc.scanned)
			}
			checkUpstreamDecode(t, []byte(tc.doc))
		})
	}
}

func checkUpstreamDecode(t *testing.T, doc []byte) {
	t.Helper()
	var got, want upstreamEvent
	gerr := decodeUpstream(doc, &got)
	werr := json.Unmarshal(doc, &want)
	if (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: decodeUpstream error %v, encoding/json error %v", doc, gerr, werr)
	}
	if werr != nil {
		return
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%q (-encoding/json +decodeUpstream):\n%s", doc, diff)
	}
}

func FuzzDecodeUpstream(f *testing.F) {
	for _, tc := range upstreamDocs {
		if len(tc.doc) < 1000 {
			f.Add([]byte(tc.doc))
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkUpstreamDecode(t, doc)
	})
}
