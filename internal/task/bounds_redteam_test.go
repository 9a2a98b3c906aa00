package task

import "testing"

// n choices each up to max_tokens: an honest record of n*max_tokens
// completion tokens must fit the bound (else the honest worker is refused
// and ejected), and n must not let a record exceed n*max_tokens.
func TestRedteamCompletionBoundWithN(t *testing.T) {
	tk := &Task{Kind: KindChat, MaxTokens: 10, N: 4}
	got := DefaultUsageBounds.MaxCompletionTokens(tk, 400)
	if got < 40 {
		t.Fatalf("bound %d for n=4 max_tokens=10 (4 full choices are 40 tokens)", got)
	}
}

// V2 response digest: moving bytes between fields must change the digest.
func TestRedteamResponseDigestV2Unambiguous(t *testing.T) {
	a := []ChoiceOutput{{Text: []byte("ab"), Calls: []ToolCall{{ID: "c", Function: FunctionCall{Name: "f", Arguments: "x"}}}}}
	b := []ChoiceOutput{{Text: []byte("a"), Calls: []ToolCall{{ID: "bc", Function: FunctionCall{Name: "f", Arguments: "x"}}}}}
	c := []ChoiceOutput{{Text: []byte("ab"), Calls: []ToolCall{{ID: "c", Function: FunctionCall{Name: "fx", Arguments: ""}}}}}
	d := []ChoiceOutput{{Text: []byte("ab")}, {}}
	e := []ChoiceOutput{{Text: []byte("ab")}}
	seen := map[[32]byte]int{}
	for i, x := range [][]ChoiceOutput{a, b, c, d, e} {
		h := ResponseDigestV2(x)
		if j, ok := seen[h]; ok {
			t.Fatalf("outputs %d and %d share a digest", i, j)
		}
		seen[h] = i
	}
}

// Every rich field that changes the output changes the request digest.
func TestRedteamRequestDigestCoversRichFields(t *testing.T) {
	base := Task{RequestID: "r", Kind: KindChat, Model: "m", Messages: []Message{{Role: "user", Content: "hi"}}, Temperature: 1, TopP: 1,
		Tools: []Tool{{Type: "function", Function: FunctionDef{Name: "f", Parameters: []byte(`{"type":"object"}`)}}}}
	tr := true
	muts := map[string]func(*Task){
		"params":      func(t *Task) { t.Tools[0].Function.Parameters = []byte(`{"type":"string"}`) },
		"desc":        func(t *Task) { t.Tools[0].Function.Description = "x" },
		"strict":      func(t *Task) { t.Tools[0].Function.Strict = &tr },
		"tool_choice": func(t *Task) { t.ToolChoice = &ToolChoice{Mode: "required"} },
		"tc_name":     func(t *Task) { t.ToolChoice = &ToolChoice{Mode: "function", Name: "f"} },
		"parallel":    func(t *Task) { t.ParallelToolCalls = &tr },
		"rf":          func(t *Task) { t.ResponseFormat = &ResponseFormat{Type: FormatJSONObject} },
		"rf_schema": func(t *Task) {
			t.ResponseFormat = &ResponseFormat{Type: FormatJSONSchema, Name: "s", Schema: []byte(`{}`)}
		},
		"logprobs": func(t *Task) { t.Logprobs = true },
		"top":      func(t *Task) { t.TopLogprobs = 2 },
		"n":        func(t *Task) { t.N = 2 },
		"parts":    func(t *Task) { t.Messages[0].Parts = []byte(`[{"type":"image_url","image_url":{"url":"x"}}]`) },
		"tool_calls": func(t *Task) {
			t.Messages[0].ToolCalls = []ToolCall{{ID: "c", Type: "function", Function: FunctionCall{Name: "f"}}}
		},
		"tool_call_id": func(t *Task) { t.Messages[0].ToolCallID = "c" },
	}
	d0 := base.Digest()
	for name, m := range muts {
		x := base
		x.Tools = append([]Tool(nil), base.Tools...)
		x.Messages = append([]Message(nil), base.Messages...)
		m(&x)
		if x.Digest() == d0 {
			t.Errorf("%s does not change the request digest", name)
		}
	}
}
