package openai

import (
	"errors"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

func richBody(extra string) string {
	return `{"model":"m","messages":[{"role":"user","content":"hi"}],` + extra + `}`
}

// Duplicate keys anywhere in the rich fields (tool, function, schema,
// tool_choice, response_format, content parts) are refused: the request a
// receipt names must be the one every JSON parser reads.
func TestRedteamRichDuplicateKeys(t *testing.T) {
	cases := map[string]string{
		"function name": richBody(`"tools":[{"type":"function","function":{"name":"a","name":"b"}}]`),
		"tool type":     richBody(`"tools":[{"type":"function","type":"function","function":{"name":"a"}}]`),
		"schema key":    richBody(`"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object","type":"string"}}}]`),
		"escaped key":   richBody(`"tools":[{"type":"function","function":{"name":"a","n\u0061me":"b"}}]`),
		"tool_choice":   richBody(`"tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"b"}}],"tool_choice":{"type":"function","function":{"name":"a","name":"b"}}`),
		"rf schema":     richBody(`"response_format":{"type":"json_schema","json_schema":{"name":"x","name":"y","schema":{}}}`),
		"part":          `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`,
		"tool call":     `{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"a","arguments":"{}","arguments":"{\"x\":1}"}}]},{"role":"tool","tool_call_id":"c","content":"ok"}],"tools":[{"type":"function","function":{"name":"a"}}]}`,
	}
	for name, body := range cases {
		if _, err := ParseChat([]byte(body), Limits{}); err == nil {
			t.Errorf("%s: duplicate key accepted", name)
		}
	}
}

// Bounds: tools, parts, tool calls, schema size and nesting.
func TestRedteamRichBounds(t *testing.T) {
	var tools []string
	for i := 0; i <= MaxTools; i++ {
		tools = append(tools, `{"type":"function","function":{"name":"f`+strings.Repeat("x", i%3)+string(rune('a'+i%26))+itoa(i)+`"}}`)
	}
	if _, err := ParseChat([]byte(richBody(`"tools":[`+strings.Join(tools, ",")+`]`)), Limits{}); err == nil {
		t.Error("129 tools accepted")
	}
	deep := strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat(`}`, 20000)
	if _, err := ParseChat([]byte(richBody(`"tools":[{"type":"function","function":{"name":"a","parameters":`+deep+`}}]`)), Limits{}); err == nil {
		t.Error("20000-deep schema accepted")
	}
	if _, err := ParseChat([]byte(richBody(`"n":9`)), Limits{}); err == nil {
		t.Error("n 9 accepted")
	}
	if _, err := ParseChat([]byte(richBody(`"logprobs":true,"top_logprobs":21`)), Limits{}); err == nil {
		t.Error("top_logprobs 21 accepted")
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

// MaxParts holds for text-only parts too (the fast message path).
func TestRedteamTextPartsBound(t *testing.T) {
	parts := strings.Repeat(`{"type":"text","text":"a"},`, MaxParts) + `{"type":"text","text":"a"}`
	if _, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"user","content":[`+parts+`]}]}`), Limits{}); err == nil {
		t.Error("257 parts accepted")
	}
	if _, err := ParseChat([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","bogus":1}]}]}`), Limits{}); err == nil {
		t.Error("unknown key in a text part accepted")
	}
}

// A duplicate key is a 400 invalid_json naming the member, on the general
// path at top level too (the fast path declines duplicates).
func TestRichDuplicateKeyParam(t *testing.T) {
	cases := map[string]string{
		`tools[0].function.parameters.type`: richBody(`"tools":[{"type":"function","function":{"name":"a","parameters":{"type":"object","type":"string"}}}]`),
		`model`:                             richBody(`"tools":[{"type":"function","function":{"name":"a"}}],"model":"other"`),
		`messages[0].content[0].text`:       `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`,
		`messages`:                          `{"model":"m","messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]}`,
	}
	for want, body := range cases {
		_, err := ParseChat([]byte(body), Limits{})
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Param != want || ae.Code != CodeInvalidJSON || ae.Type != apierr.TypeInvalidRequest {
			t.Errorf("%s: err = %#v, want 400 invalid_json param %q", want, err, want)
		}
	}
}
