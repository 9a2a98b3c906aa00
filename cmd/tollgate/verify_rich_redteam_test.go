package main

import (
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// docs/receipts.md: a client checks its receipt with `tollgate verify
// --response answer.json`. A task with tools (or n > 1) is hashed with
// ResponseDigestV2, so verify must rebuild that layout (verifyDigests does,
// through richOutput; the end-to-end check is TestVerifyToolCallReceipts), else every honest
// rich receipt reads as a MISMATCH (and a forged one cannot be told apart).
func TestRedteamVerifyRichResponseDigest(t *testing.T) {
	answer := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	want := task.ResponseDigestV2([]task.ChoiceOutput{{Calls: []task.ToolCall{{ID: "call_1", Type: "function",
		Function: task.FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}}}}})
	out, ok, err := richOutput([]byte(answer), nil)
	if err != nil || !ok {
		t.Fatalf("rich output not rebuilt: ok %v, err %v", ok, err)
	}
	if got := out.Digest(); got != want {
		t.Fatalf("verify digest %x, receipt's %x", got, want)
	}
}
