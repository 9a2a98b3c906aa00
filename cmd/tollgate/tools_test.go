package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

const weatherSchema = `{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}`

const toolsJSON = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":` + weatherSchema + `}},` +
	`{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string","enum":["UTC","CET"]}}}}}]`

type toolAnswer struct {
	Choices []struct {
		Message struct {
			Content   *string `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

// Tool calling end to end: a client's tools reach the upstream behind a
// worker on the openai engine, its call comes back as OpenAI renders it
// (non-streamed and streamed), with a receipt, for each tool_choice.
func TestToolCallsEndToEnd(t *testing.T) {
	d, up := startUpstreamDev(t, upstreamtest.Config{})
	user := `"messages":[{"role":"user","content":"Weather in Paris?"}]`
	cases := []struct {
		name       string
		body       string
		wantTool   string // "" : a text answer
		wantSchema string
	}{
		{"auto", `{"model":"mock-llm",` + user + `,` + toolsJSON + `}`, "get_weather", weatherSchema},
		{"required", `{"model":"mock-llm",` + user + `,` + toolsJSON + `,"tool_choice":"required"}`, "get_weather", weatherSchema},
		{"named", `{"model":"mock-llm",` + user + `,` + toolsJSON + `,"tool_choice":{"type":"function","function":{"name":"get_time"}}}`, "get_time", `{"type":"object","properties":{"zone":{"type":"string","enum":["UTC","CET"]}}}`},
		{"none", `{"model":"mock-llm",` + user + `,` + toolsJSON + `,"tool_choice":"none"}`, "", ""},
		{"tool result answered", `{"model":"mock-llm","messages":[{"role":"user","content":"Weather in Paris?"},` +
			`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
			`{"role":"tool","tool_call_id":"call_1","content":"sunny, 21C"}],` + toolsJSON + `}`, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := chatRequest(t, d, c.body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Tollgate-Receipt") == "" {
				t.Error("no receipt")
			}
			var a toolAnswer
			if err := json.Unmarshal([]byte(body), &a); err != nil || len(a.Choices) != 1 {
				t.Fatalf("answer %s: %v", body, err)
			}
			ch := a.Choices[0]
			if c.wantTool == "" {
				if len(ch.Message.ToolCalls) != 0 || ch.Message.Content == nil || *ch.Message.Content == "" || ch.FinishReason != "stop" {
					t.Errorf("want a text answer, got %s", body)
				}
			} else {
				if len(ch.Message.ToolCalls) != 1 || ch.Message.Content != nil || ch.FinishReason != "tool_calls" {
					t.Fatalf("want one call and content null, got %s", body)
				}
				call := ch.Message.ToolCalls[0]
				if call.Function.Name != c.wantTool || call.Type != "function" || !strings.HasPrefix(call.ID, "call_") ||
					call.Function.Arguments != upstreamtest.ArgumentsFor(json.RawMessage(c.wantSchema)) {
					t.Errorf("call %+v", call)
				}
			}
			// The upstream got the request as the client wrote it.
			var sent struct {
				Tools      []json.RawMessage `json:"tools"`
				ToolChoice json.RawMessage   `json:"tool_choice"`
				Messages   []json.RawMessage `json:"messages"`
			}
			json.Unmarshal(up.LastBody("/v1/chat/completions"), &sent)
			if len(sent.Tools) != 2 || !strings.Contains(string(sent.Tools[0]), `"parameters":`+weatherSchema) {
				t.Errorf("upstream got tools %s", sent.Tools)
			}
			if c.name == "tool result answered" && (!strings.Contains(string(sent.Messages[1]), `"content":null`) || !strings.Contains(string(sent.Messages[2]), `"tool_call_id":"call_1"`)) {
				t.Errorf("upstream got messages %s", sent.Messages)
			}
		})
	}
}

func TestToolCallsStreamedEndToEnd(t *testing.T) {
	d, _ := startUpstreamDev(t, upstreamtest.Config{})
	resp, body := chatRequest(t, d, `{"model":"mock-llm","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Weather?"}],`+toolsJSON+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var args strings.Builder
	var firsts, fragments int
	finish, usage, done := "", false, false
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					ToolCalls []struct {
						Index    *int   `json:"index"`
						ID       string `json:"id"`
						Type     string `json:"type"`
						Function *struct {
							Name      string  `json:"name"`
							Arguments *string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("chunk %s: %v", line, err)
		}
		usage = usage || c.Usage != nil && c.Usage.CompletionTokens > 0
		for _, ch := range c.Choices {
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
			for _, tc := range ch.Delta.ToolCalls {
				if tc.Index == nil || *tc.Index != 0 || tc.Function == nil || tc.Function.Arguments == nil {
					t.Fatalf("tool call piece %s", line)
				}
				if tc.ID != "" {
					firsts++
					if tc.Type != "function" || tc.Function.Name != "get_weather" || *tc.Function.Arguments != "" || args.Len() > 0 {
						t.Errorf("first piece %s", line)
					}
				} else {
					fragments++
					if tc.Type != "" || tc.Function.Name != "" {
						t.Errorf("later piece repeats id/type/name: %s", line)
					}
				}
				args.WriteString(*tc.Function.Arguments)
			}
		}
	}
	if firsts != 1 || fragments < 2 || args.String() != upstreamtest.ArgumentsFor(json.RawMessage(weatherSchema)) || finish != "tool_calls" || !usage || !done {
		t.Errorf("firsts %d fragments %d args %q finish %q usage %v done %v\n%s", firsts, fragments, args.String(), finish, usage, done, body)
	}
}

// A model whose workers declare no tools (the simulator) refuses them
// with OpenAI's 400, naming the parameter, before any dispatch.
func TestToolsUnsupportedBySimWorker(t *testing.T) {
	d, err := startDevLogged(t.TempDir(), false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop() })
	for _, c := range []struct{ body, param string }{
		{`{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}],` + toolsJSON + `}`, "tools"},
		{`{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}],"n":2}`, "n"},
		{`{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`, "response_format"},
	} {
		resp, body := chatRequest(t, d, c.body)
		var e struct {
			Error struct {
				Param, Code, Message string
			}
		}
		json.Unmarshal([]byte(body), &e)
		if resp.StatusCode != 400 || e.Error.Param != c.param || e.Error.Code != "unsupported_parameter" || !strings.Contains(e.Error.Message, "Model 'sim-tiny' does not support") {
			t.Errorf("%s: %d %s", c.param, resp.StatusCode, body)
		}
	}
	if resp, body := chatRequest(t, d, `{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Errorf("plain request: %d %s", resp.StatusCode, body)
	}
	// The Responses API runs the same check before admission.
	for _, c := range []struct{ body, param string }{
		{`{"model":"sim-tiny","input":"hi","tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{}}}]}`, "tools"},
		{`{"model":"sim-tiny","input":"hi","text":{"format":{"type":"json_object"}}}`, "response_format"},
	} {
		req, _ := http.NewRequest(http.MethodPost, d.URL()+"/v1/responses", strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+sdkKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "unsupported_parameter") || !strings.Contains(string(b), "does not support") {
			t.Errorf("responses %s: %d %s", c.param, resp.StatusCode, b)
		}
	}
}

// `tollgate verify --request --response` recomputes a tool-call answer's
// receipt digests (rich layout), JSON and streamed, with or without the
// request; changed arguments do not check.
func TestVerifyToolCallReceipts(t *testing.T) {
	d, _ := startUpstreamDev(t, upstreamtest.Config{})
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	for i, body := range []string{
		`{"model":"mock-llm","messages":[{"role":"user","content":"Weather?"}],` + toolsJSON + `}`,
		`{"model":"mock-llm","messages":[{"role":"user","content":"Weather?"}],"stream":true,` + toolsJSON + `}`,
		`{"model":"mock-llm","messages":[{"role":"user","content":"Weather?"}],"n":2}`,
		`{"model":"mock-llm","messages":[{"role":"user","content":"Weather?"}],` + toolsJSON + `,"tool_choice":"none"}`,
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			resp, answer := chatRequest(t, d, body)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, answer)
			}
			os.WriteFile(path("req.json"), []byte(body), 0o600)
			os.WriteFile(path("resp.body"), []byte(answer), 0o600)
			os.WriteFile(path("receipt.json"), getReceipt(t, d, sdkKey, resp.Header.Get("X-Tollgate-Receipt")), 0o600)
			var out bytes.Buffer
			if err := verifyDigests(&out, path("req.json"), path("resp.body"), []string{path("receipt.json")}); err != nil {
				t.Fatalf("%v\n%s\n%s", err, out.String(), answer)
			}
			if err := verifyDigests(io.Discard, "", path("resp.body"), []string{path("receipt.json")}); err != nil {
				t.Errorf("without the request: %v", err)
			}
			tampered := strings.Replace(answer, `\"mock\"`, `\"m0ck\"`, 1) // the arguments
			if tampered == answer {
				tampered = strings.Replace(answer, `"content":"`, `"content":"x`, 1)
			}
			os.WriteFile(path("resp2.body"), []byte(tampered), 0o600)
			if err := verifyDigests(io.Discard, path("req.json"), path("resp2.body"), []string{path("receipt.json")}); err == nil {
				t.Errorf("a changed answer checks:\n%s", tampered)
			}
		})
	}
}
