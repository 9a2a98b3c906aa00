package task

import (
	"encoding/hex"
	"testing"
)

func TestOutputAdd(t *testing.T) {
	o := NewOutput(2)
	steps := []struct {
		choice int
		text   string
		calls  []ToolCallDelta
		ok     bool
	}{
		{0, "", []ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "get_weather"}}, true},
		{0, "", []ToolCallDelta{{Index: 0, Arguments: `{"city":`}}, true},
		{0, "", []ToolCallDelta{{Index: 0, Arguments: `"Paris"}`}}, true},
		{1, "hello", nil, true},
		{2, "x", nil, false}, // choice out of range
		{0, "", []ToolCallDelta{{Index: 2, ID: "c", Name: "f"}}, false},     // skips call 1
		{0, "", []ToolCallDelta{{Index: 1, Arguments: "{}"}}, false},        // continues a call not started
		{0, "", []ToolCallDelta{{Index: 0, ID: "again", Name: "f"}}, false}, // restarts call 0
		{0, "", []ToolCallDelta{{Index: 1, ID: "c", Name: ""}}, false},      // no name
		{0, "", []ToolCallDelta{{Index: 1, ID: "c", Name: "f", Type: "code"}}, false},
	}
	for i, s := range steps {
		if err := o.Add(s.choice, s.text, s.calls); (err == nil) != s.ok {
			t.Errorf("step %d: err %v, want ok=%v", i, err, s.ok)
		}
	}
	if got := o.Choices[0].Calls[0].Function.Arguments; got != `{"city":"Paris"}` || string(o.Choices[1].Text) != "hello" {
		t.Errorf("output %+v", o)
	}
}

// The v2 layout is pinned: a change breaks every receipt already issued.
// Each tampering (arguments, name, id, a call moved between choices, text
// shifted into arguments) changes the digest.
func TestResponseDigestV2(t *testing.T) {
	call := func(id, name, args string) ToolCall {
		return ToolCall{ID: id, Type: "function", Function: FunctionCall{Name: name, Arguments: args}}
	}
	base := []ChoiceOutput{{Calls: []ToolCall{call("call_1", "get_weather", `{"city":"Paris"}`)}}, {Text: []byte("hi")}}
	got := ResponseDigestV2(base)
	if h := hex.EncodeToString(got[:]); h != pinnedV2 {
		t.Errorf("digest %s, pinned %s", h, pinnedV2)
	}
	variants := [][]ChoiceOutput{
		{{Calls: []ToolCall{call("call_1", "get_weather", `{"city":"Lyon"}`)}}, {Text: []byte("hi")}},
		{{Calls: []ToolCall{call("call_1", "get_weathe", `r{"city":"Paris"}`)}}, {Text: []byte("hi")}},
		{{Calls: []ToolCall{call("call_2", "get_weather", `{"city":"Paris"}`)}}, {Text: []byte("hi")}},
		{{Text: []byte("hi")}, {Calls: []ToolCall{call("call_1", "get_weather", `{"city":"Paris"}`)}}},
		{{Calls: []ToolCall{call("call_1", "get_weather", `{"city":"Paris"}`)}}, {Text: []byte("hi")}, {}},
		{{Text: []byte(""), Calls: []ToolCall{call("call_1", "get_weather", `{"city":"Paris"}hi`)}}, {}},
	}
	for i, v := range variants {
		if ResponseDigestV2(v) == got {
			t.Errorf("variant %d hashes like the original", i)
		}
	}
}

const pinnedV2 = "ae37774c04ce34046d4c7037c32b06b88a4ca6e321d8714996fa7b228476a622"
