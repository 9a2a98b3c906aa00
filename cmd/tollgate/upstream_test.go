package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

// startUpstreamDev runs the dev stack with its worker on the OpenAI engine
// in front of a mock upstream.
func startUpstreamDev(t *testing.T, cfg upstreamtest.Config) (*devStack, *upstreamtest.Server) {
	t.Helper()
	up := upstreamtest.Start(cfg)
	t.Cleanup(up.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	o := devOptions{ln: ln, logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	o.gateway = gatewayFlags{data: t.TempDir(), apiKey: sdkKey, adminKey: "sk-admin-test", noProver: true}
	o.engine = engineFlags{kind: "openai", upstream: up.URL, modelName: "mock-llm", upstreamDigest: strings.Repeat("ab", 32)}
	d, err := startDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return d, up
}

func chatRequest(t *testing.T, d *devStack, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.URL()+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestUpstreamStreamErrorsEndToEnd: llama.cpp reporting a prompt over its
// context inside a 200 stream (`error: {...}` then `data: [DONE]`) reaches
// the client as its 400 with no receipt; vLLM failing after two tokens
// ends the client's stream with an error event, and the receipt its
// headers named holds exactly those two tokens, finish reason error.
func TestUpstreamStreamErrorsEndToEnd(t *testing.T) {
	d, up := startUpstreamDev(t, upstreamtest.Config{})
	const stream = `{"model":"mock-llm","stream":true,"messages":[{"role":"user","content":"a very long prompt"}]}`

	up.FailNext(1, upstreamtest.Failure{Status: 400, Type: "exceed_context_size_error", Form: upstreamtest.FormLlamaCpp,
		Message: "the request exceeds the available context size, try increasing it"})
	resp, body := chatRequest(t, d, stream)
	if resp.StatusCode != 400 || !strings.Contains(body, "exceeds the available context size") || resp.Header.Get("X-Tollgate-Receipt") != "" {
		t.Errorf("llama.cpp's stream error: %d %s receipt %q, want its 400 and no receipt", resp.StatusCode, body, resp.Header.Get("X-Tollgate-Receipt"))
	}

	up.FailNext(1, upstreamtest.Failure{Status: 500, Type: "InternalServerError", Form: upstreamtest.FormVLLM, AfterTokens: 2, Message: "engine dead"})
	resp, body = chatRequest(t, d, stream)
	id := resp.Header.Get("X-Tollgate-Receipt")
	if resp.StatusCode != 200 || id == "" || !strings.Contains(body, `"code":"upstream_error"`) || strings.Contains(body, "[DONE]") {
		t.Fatalf("vLLM failing mid-stream: %d receipt %q\n%s", resp.StatusCode, id, body)
	}
	var r struct {
		Status           string `json:"status"`
		FinishReason     string `json:"finish_reason"`
		CompletionTokens int    `json:"completion_tokens"`
	}
	if err := json.Unmarshal(getReceipt(t, d, sdkKey, id), &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "pending" || r.FinishReason != "error" || r.CompletionTokens != 2 {
		t.Errorf("receipt %+v, want the 2 tokens the client received, finish error", r)
	}
}

// TestLyingUpstreamEndToEnd: an upstream that reports 123,456 prompt and
// 654,321 completion tokens for a few words gets its worker's record
// refused: the client gets 502 worker_record_refused and no receipt (a
// streamed one: an error event, and a void receipt), and the ledger bills
// nothing.
func TestLyingUpstreamEndToEnd(t *testing.T) {
	lie := upstreamtest.Config{ReportUsage: &upstreamtest.Usage{PromptTokens: 123_456, CompletionTokens: 654_321}}
	t.Run("one answer", func(t *testing.T) {
		d, _ := startUpstreamDev(t, lie)
		resp, body := chatRequest(t, d, `{"model":"mock-llm","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 502 || !strings.Contains(body, "worker_record_refused") || resp.Header.Get("X-Tollgate-Receipt") != "" {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
		if n := d.gw.sched.Stats().RecordsRefused; n != 1 {
			t.Errorf("%d refusals counted, want 1", n)
		}
		// The lying worker is out of rotation.
		if resp, body := chatRequest(t, d, `{"model":"mock-llm","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 503 {
			t.Errorf("after the refusal: %d %s, want 503 (the worker ejected)", resp.StatusCode, body)
		}
	})
	t.Run("streamed", func(t *testing.T) {
		d, _ := startUpstreamDev(t, lie)
		req, _ := http.NewRequest(http.MethodPost, d.URL()+"/v1/chat/completions",
			strings.NewReader(`{"model":"mock-llm","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+sdkKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		id := resp.Header.Get("X-Tollgate-Receipt")
		var last string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") {
				last = sc.Text()
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(last, "worker_record_refused") {
			t.Fatalf("%d, last event %s", resp.StatusCode, last)
		}
		var r struct{ Status, Error string }
		if err := json.Unmarshal(getReceipt(t, d, sdkKey, id), &r); err != nil {
			t.Fatal(err)
		}
		if r.Status != "void" || r.Error == "" {
			t.Errorf("the streamed request's receipt %+v, want void with a reason", r)
		}
	})
}
