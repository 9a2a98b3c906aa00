package openai

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

// The engine sends the richer request in OpenAI's shape and reads tool
// calls, several choices and logprobs back, streamed and whole.
func TestGenerateRich(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	e := newEngine(t, up, nil)
	schema := json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)
	base := func(stream bool) *task.Task {
		tk := &task.Task{RequestID: "r", Kind: task.KindChat, Model: "mock-llm", Stream: stream, Temperature: 1, TopP: 1,
			Messages: []task.Message{{Role: "user", Content: "look", Parts: json.RawMessage(`[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]`)}}}
		if !stream {
			tk.Deadline = time.Now().Add(time.Minute)
		}
		return tk
	}
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "whole", true: "streamed"}[stream], func(t *testing.T) {
			tk := base(stream)
			tk.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "get_weather", Parameters: schema}}}
			tk.ToolChoice = &task.ToolChoice{Mode: "function", Name: "get_weather"}
			out := task.NewOutput(1)
			res, err := e.Generate(context.Background(), tk, func(d task.Delta) error { return out.Add(d.Choice, d.Text, d.ToolCalls) })
			if err != nil {
				t.Fatal(err)
			}
			calls := out.Choices[0].Calls
			if res.FinishReason != task.FinishToolCalls || len(calls) != 1 || calls[0].Function.Name != "get_weather" ||
				calls[0].Function.Arguments != upstreamtest.ArgumentsFor(schema) || res.CompletionTokens == 0 {
				t.Errorf("result %+v, calls %+v", res, calls)
			}
			sent := string(up.LastBody("/v1/chat/completions"))
			for _, want := range []string{`"tool_choice":{"function":{"name":"get_weather"},"type":"function"}`, `"content":[{"type":"text","text":"look"},{"type":"image_url"`, `"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"`} {
				if !strings.Contains(sent, want) {
					t.Errorf("upstream body lacks %s:\n%s", want, sent)
				}
			}
			if strings.Contains(sent, `"parts"`) {
				t.Errorf("upstream body carries the task's own field names: %s", sent)
			}

			tk = base(stream)
			tk.N, tk.Logprobs, tk.TopLogprobs = 2, true, 2
			tk.ResponseFormat = &task.ResponseFormat{Type: task.FormatJSONSchema, Name: "w", Schema: schema}
			out = task.NewOutput(2)
			lp := 0
			res, err = e.Generate(context.Background(), tk, func(d task.Delta) error {
				if d.Logprobs != nil {
					lp++
				}
				return out.Add(d.Choice, d.Text, d.ToolCalls)
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range out.Choices {
				if string(c.Text) != upstreamtest.ArgumentsFor(schema) {
					t.Errorf("choice %d: %q", i, c.Text)
				}
			}
			if lp == 0 || res.FinishReason != "stop" {
				t.Errorf("logprobs deltas %d, finish %q", lp, res.FinishReason)
			}
			sent = string(up.LastBody("/v1/chat/completions"))
			for _, want := range []string{`"n":2`, `"logprobs":true`, `"top_logprobs":2`, `"response_format":{"type":"json_schema","json_schema":{"name":"w","schema":`} {
				if !strings.Contains(sent, want) {
					t.Errorf("upstream body lacks %s:\n%s", want, sent)
				}
			}
		})
	}
}
