package openai

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fastChatBodies = []struct {
	name string
	body string
	fast bool
}{
	{"sdk body", `{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hi \"there\"\n\u00e9"}],"model":"m","max_tokens":16,"temperature":0.7,"top_p":1,"stream":false,"user":"u"}`, true},
	{"stream with usage", `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true},"seed":-3,"stop":["a","b"],"n":1}`, true},
	{"stop string, penalties", ` {"model":"m","messages":[{"role":"user","content":"","name":"bob"}],"stop":"\n","presence_penalty":-2,"frequency_penalty":1e-1,"max_completion_tokens":5} `, true},
	{"null member", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":null}`, false},
	{"unknown member", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]}`, false},
	{"repeated member", `{"model":"m","model":"n","messages":[{"role":"user","content":"x"}]}`, false},
	{"content parts", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`, false},
	{"float max_tokens", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.0}`, false},
	{"invalid: bad role", `{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, false},
	{"invalid: no messages", `{"model":"m","messages":[]}`, false},
	{"invalid: both max", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1,"max_completion_tokens":1}`, false},
	{"invalid: temperature", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}`, false},
	{"invalid: stream options without stream", `{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}`, false},
	{"invalid: trailing", `{"model":"m","messages":[{"role":"user","content":"x"}]} {}`, false},
	{"invalid: leading zero", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":01}`, false},
	{"surrogates", `{"model":"m","messages":[{"role":"user","content":"\ud83d\ude42"}]}`, false},
}

// TestFastChatMatchesGeneral: a body the fast path takes decodes to exactly
// what the general path makes of it, and the general path accepts it.
func TestFastChatMatchesGeneral(t *testing.T) {
	for _, tc := range fastChatBodies {
		t.Run(tc.name, func(t *testing.T) {
			_, fast := fastChat([]byte(tc.body), Limits{}.withDefaults())
			if fast != tc.fast {
				t.Errorf("fast path took it: %v, want %v", fast, tc.fast)
			}
			checkFastChat(t, []byte(tc.body))
		})
	}
	for _, tc := range chatCases {
		t.Run("errCase/"+tc.name, func(t *testing.T) { checkFastChat(t, []byte(tc.body)) })
	}
}

func checkFastChat(t *testing.T, body []byte) {
	t.Helper()
	lim := Limits{MaxMessages: 3}.withDefaults()
	fast, ok := fastChat(body, lim)
	if !ok {
		return
	}
	general, err := parseChatGeneral(body, lim)
	if err != nil {
		t.Fatalf("%s: fast path accepted, general path refuses: %v", body, err)
	}
	if diff := cmp.Diff(general, fast); diff != "" {
		t.Fatalf("%s (-general +fast):\n%s", body, diff)
	}
}

func FuzzFastChat(f *testing.F) {
	for _, tc := range fastChatBodies {
		f.Add([]byte(tc.body))
	}
	for _, tc := range chatCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFastChat(t, body) })
}
