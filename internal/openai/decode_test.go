package openai

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

type errCase struct {
	name  string
	body  string
	param string // "" with code "" means: must succeed
	code  string
}

var chatCases = []errCase{
	{"ok minimal", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, "", ""},
	{"ok parts", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`, "", ""},
	{"ok full", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"user","content":"u","name":"bob"},{"role":"assistant","content":"a"}],"max_tokens":5,"temperature":0,"top_p":1,"n":1,"stop":["x","y"],"seed":7,"stream":true,"stream_options":{"include_usage":true},"user":"u1","presence_penalty":0.5,"frequency_penalty":-1,"logprobs":false,"response_format":{"type":"text"},"tools":null,"logit_bias":{}}`, "", ""},
	{"ok stop string", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"\n"}`, "", ""},
	{"ok max_completion_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`, "", ""},
	{"empty body", ``, "", CodeInvalidJSON},
	{"malformed json", `{"model":"m",`, "", CodeInvalidJSON},
	{"not an object", `[1,2]`, "", CodeInvalidJSON},
	{"trailing data", `{"model":"m"} {}`, "", CodeInvalidJSON},
	{"missing model", `{"messages":[{"role":"user","content":"hi"}]}`, "model", CodeMissing},
	{"null model", `{"model":null,"messages":[{"role":"user","content":"hi"}]}`, "model", CodeMissing},
	{"empty model", `{"model":"","messages":[{"role":"user","content":"hi"}]}`, "model", CodeInvalidValue},
	{"model wrong type", `{"model":5,"messages":[{"role":"user","content":"hi"}]}`, "model", CodeInvalidType},
	{"missing messages", `{"model":"m"}`, "messages", CodeMissing},
	{"empty messages", `{"model":"m","messages":[]}`, "messages", CodeInvalidValue},
	{"messages wrong type", `{"model":"m","messages":"hi"}`, "messages", CodeInvalidType},
	{"message not object", `{"model":"m","messages":["hi"]}`, "messages[0]", CodeInvalidType},
	{"unknown role", `{"model":"m","messages":[{"role":"wizard","content":"hi"}]}`, "messages[0].role", CodeUnsupportedRole},
	{"tool role without id", `{"model":"m","messages":[{"role":"tool","content":"hi"}]}`, "messages[0].tool_call_id", CodeMissing},
	{"function role", `{"model":"m","messages":[{"role":"function","content":"hi"}]}`, "messages[0].role", CodeUnsupported},
	{"missing role", `{"model":"m","messages":[{"content":"hi"}]}`, "messages[0].role", CodeMissing},
	{"missing content", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content", CodeMissing},
	{"content wrong type", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content", CodeInvalidType},
	{"image part bad url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, "messages[1-1].content[0].image_url.url", CodeInvalidValue},
	{"tool_calls incomplete", `{"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":[{"id":"1"}]}]}`, "messages[0].tool_calls[0].type", CodeMissing},
	{"unknown message field", `{"model":"m","messages":[{"role":"user","content":"x","foo":1}]}`, "messages[0].foo", CodeUnknown},
	{"ok refusal and empty tool_calls", `{"model":"m","messages":[{"role":"assistant","content":"x","refusal":null,"tool_calls":[]},{"content":"y","role":"user","name":"n"}]}`, "", ""},
	{"second message bad", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":null}]}`, "messages[1].content", CodeMissing},
	{"name wrong type", `{"model":"m","messages":[{"role":"user","content":"x","name":3}]}`, "messages[0].name", CodeInvalidType},
	{"ok n 2", `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}`, "", ""},
	{"n 9", `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":9}`, "n", CodeInvalidValue},
	{"n 0", `{"model":"m","messages":[{"role":"user","content":"hi"}],"n":0}`, "n", CodeInvalidValue},
	{"negative max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}`, "max_tokens", CodeInvalidValue},
	{"zero max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, "max_tokens", CodeInvalidValue},
	{"huge max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1000000000}`, "max_tokens", CodeInvalidValue},
	{"overflowing max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1e40}`, "max_tokens", CodeInvalidType},
	{"fractional max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1.5}`, "max_tokens", CodeInvalidType},
	{"max_tokens string", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":"5"}`, "max_tokens", CodeInvalidType},
	{"huge max_completion_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":999999999}`, "max_completion_tokens", CodeInvalidValue},
	{"both max fields", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"max_completion_tokens":1}`, "max_tokens", CodeInvalidValue},
	{"temperature high", `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":2.5}`, "temperature", CodeInvalidValue},
	{"temperature negative", `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":-0.1}`, "temperature", CodeInvalidValue},
	{"temperature string", `{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}`, "temperature", CodeInvalidType},
	{"top_p zero", `{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0}`, "top_p", CodeInvalidValue},
	{"top_p above one", `{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":1.01}`, "top_p", CodeInvalidValue},
	{"presence out of range", `{"model":"m","messages":[{"role":"user","content":"hi"}],"presence_penalty":3}`, "presence_penalty", CodeInvalidValue},
	{"stream wrong type", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}`, "stream", CodeInvalidType},
	{"stream_options without stream", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, "stream_options", CodeInvalidValue},
	{"stream_options unknown key", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true,"frobnicate":1}}`, "stream_options.frobnicate", CodeUnknown},
	{"stream_options key in other case", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"Include_Usage":true}}`, "stream_options.Include_Usage", CodeUnknown},
	{"stream_options not an object", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":[true]}`, "stream_options", CodeInvalidType},
	{"stream_options usage wrong type", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":"yes"}}`, "stream_options.include_usage", CodeInvalidType},
	{"ok stream_options null", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream_options":null}`, "", ""},
	{"ok stream_options obfuscation", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}`, "", ""},
	{"five stops", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"]}`, "stop", CodeInvalidValue},
	{"stop wrong type", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":5}`, "stop", CodeInvalidType},
	{"ok logprobs true", `{"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":20}`, "", ""},
	{"tool without function", `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}`, "tools[0].function", CodeMissing},
	{"functions", `{"model":"m","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}]}`, "functions", CodeUnsupported},
	{"logit_bias", `{"model":"m","messages":[{"role":"user","content":"hi"}],"logit_bias":{"50256":-100}}`, "logit_bias", CodeUnsupported},
	{"ok json response_format", `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`, "", ""},
	{"unknown parameter", `{"model":"m","messages":[{"role":"user","content":"hi"}],"frobnicate":1}`, "frobnicate", CodeUnknown},
}

func TestParseChat(t *testing.T) {
	for _, tc := range chatCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseChat([]byte(tc.body), Limits{})
			checkErr(t, err, tc)
		})
	}
}

func checkErr(t *testing.T, err error, tc errCase) {
	t.Helper()
	if tc.code == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v, want *apierr.Error", err)
	}
	want := strings.ReplaceAll(tc.param, "[1-1]", "[0]")
	if ae.Status != 400 || ae.Param != want || ae.Code != tc.code || ae.Type != apierr.TypeInvalidRequest || ae.Message == "" {
		t.Errorf("got status=%d param=%q code=%q type=%q (%s), want 400 param=%q code=%q", ae.Status, ae.Param, ae.Code, ae.Type, ae.Message, want, tc.code)
	}
}

var completionCases = []errCase{
	{"ok string", `{"model":"m","prompt":"hello"}`, "", ""},
	{"ok array of one", `{"model":"m","prompt":["hello"],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true},"echo":false,"best_of":1,"logprobs":null}`, "", ""},
	{"missing prompt", `{"model":"m"}`, "prompt", CodeMissing},
	{"prompt wrong type", `{"model":"m","prompt":{"a":1}}`, "prompt", CodeInvalidType},
	{"token prompt", `{"model":"m","prompt":[1,2,3]}`, "prompt", CodeUnsupported},
	{"token prompts", `{"model":"m","prompt":[[1,2],[3]]}`, "prompt", CodeUnsupported},
	{"two prompts", `{"model":"m","prompt":["a","b"]}`, "prompt", CodeUnsupported},
	{"echo", `{"model":"m","prompt":"a","echo":true}`, "echo", CodeUnsupported},
	{"suffix", `{"model":"m","prompt":"a","suffix":"z"}`, "suffix", CodeUnsupported},
	{"logprobs", `{"model":"m","prompt":"a","logprobs":2}`, "logprobs", CodeUnsupported},
	{"best_of", `{"model":"m","prompt":"a","best_of":3}`, "best_of", CodeUnsupported},
	{"negative max_tokens", `{"model":"m","prompt":"a","max_tokens":-5}`, "max_tokens", CodeInvalidValue},
	{"missing model", `{"prompt":"a"}`, "model", CodeMissing},
	{"unknown", `{"model":"m","prompt":"a","messages":[]}`, "messages", CodeUnknown},
	{"stream_options unknown key", `{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":true,"x":0}}`, "stream_options.x", CodeUnknown},
}

func TestParseCompletion(t *testing.T) {
	for _, tc := range completionCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCompletion([]byte(tc.body), Limits{})
			checkErr(t, err, tc)
		})
	}
}

var embeddingCases = []errCase{
	{"ok string", `{"model":"e","input":"hello"}`, "", ""},
	{"ok array", `{"model":"e","input":["a","b"],"encoding_format":"base64","user":"u"}`, "", ""},
	{"missing input", `{"model":"e"}`, "input", CodeMissing},
	{"empty array", `{"model":"e","input":[]}`, "input", CodeInvalidValue},
	{"empty string", `{"model":"e","input":""}`, "input", CodeInvalidValue},
	{"tokens", `{"model":"e","input":[1,2]}`, "input", CodeUnsupported},
	{"mixed array", `{"model":"e","input":["a",1]}`, "input", CodeInvalidType},
	{"bad format", `{"model":"e","input":"a","encoding_format":"int8"}`, "encoding_format", CodeInvalidValue},
	{"dimensions", `{"model":"e","input":"a","dimensions":64}`, "", ""},
	{"dimensions zero", `{"model":"e","input":"a","dimensions":0}`, "dimensions", CodeInvalidValue},
	{"dimensions huge", `{"model":"e","input":"a","dimensions":1000000}`, "dimensions", CodeInvalidValue},
	{"dimensions string", `{"model":"e","input":"a","dimensions":"64"}`, "dimensions", CodeInvalidType},
}

func TestParseEmbedding(t *testing.T) {
	for _, tc := range embeddingCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseEmbedding([]byte(tc.body), Limits{})
			checkErr(t, err, tc)
		})
	}
}

func TestChatTask(t *testing.T) {
	r, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_completion_tokens":9,"stop":"END","seed":3}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	seed := int64(3)
	want := &task.Task{
		RequestID: "req_1", Kind: task.KindChat, Model: "m",
		Messages:  []task.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "a\nb"}},
		MaxTokens: 9, Temperature: 1, TopP: 1, Seed: &seed, Stop: []string{"END"}, PromptTokensHint: 3,
	}
	if diff := cmp.Diff(r.Task("req_1"), want); diff != "" {
		t.Errorf("Task (-got +want):\n%s", diff)
	}
}

func TestCompletionTaskDefaults(t *testing.T) {
	r, err := ParseCompletion([]byte(`{"model":"m","prompt":["once upon"],"temperature":0}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := &task.Task{RequestID: "r", Kind: task.KindCompletion, Model: "m", Prompt: "once upon", MaxTokens: 16, Temperature: 0, TopP: 1, PromptTokensHint: 3}
	if diff := cmp.Diff(r.Task("r"), want); diff != "" {
		t.Errorf("Task (-got +want):\n%s", diff)
	}
}

func TestMarshalError(t *testing.T) {
	tests := []struct {
		name string
		err  *apierr.Error
		want string
	}{
		{"with param and code", apierr.BadRequest("n", "unsupported_parameter", "no"), `{"error":{"message":"no","type":"invalid_request_error","param":"n","code":"unsupported_parameter"}}`},
		{"nulls", &apierr.Error{Status: 500, Type: apierr.TypeServer, Message: "boom"}, `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(MarshalError(tc.err)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestEmbeddingBase64(t *testing.T) {
	l := NewEmbeddingList("e", "base64", [][]float32{{1, 0}}, 2)
	if got, want := l.Data[0].Embedding, "AACAPwAAAAA="; got != want {
		t.Errorf("base64 = %v, want %v", got, want)
	}
}

// FuzzParse feeds arbitrary bodies to every parser: they must return either a
// request or a 400 *apierr.Error, never panic or another error.
func FuzzParse(f *testing.F) {
	for _, cs := range [][]errCase{chatCases, completionCases, embeddingCases} {
		for _, tc := range cs {
			f.Add([]byte(tc.body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != 400 {
				t.Fatalf("error %v is not a 400 *apierr.Error", err)
			}
		}
		if r, err := ParseChat(body, Limits{}); err == nil {
			r.Task("x")
		} else {
			check(err)
		}
		if r, err := ParseCompletion(body, Limits{}); err == nil {
			r.Task("x")
		} else {
			check(err)
		}
		if r, err := ParseEmbedding(body, Limits{}); err == nil {
			r.Task("x")
		} else {
			check(err)
		}
	})
}
