package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

// TestMockUpstreamCommand: `tollgate mock-upstream` serves the mock on the
// given listener (models, a chat answer, a stream with its usage chunk and
// [DONE], embeddings for the generation model), prints its ready line with
// that address, and stops when its context ends.
func TestMockUpstreamCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String() + "/v1"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- serveMockUpstream(ctx, ln, upstreamtest.Config{Models: []string{"m1"}, EmbeddingModels: []string{"m1"}}, &logs)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), mockUpstreamReady+base) {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line naming %s; log:\n%s", base, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := call("GET", "/models", ""); code != 200 || !strings.Contains(body, `"id":"m1"`) {
		t.Errorf("models: %d %s", code, body)
	}
	code, body := call("POST", "/chat/completions", `{"model":"m1","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
	var chat struct {
		Choices []struct {
			Message struct{ Content string }
		}
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal([]byte(body), &chat); code != 200 || err != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" || chat.Usage.CompletionTokens != 3 {
		t.Errorf("chat: %d %s (decode: %v)", code, body, err)
	}
	code, body = call("POST", "/chat/completions", `{"model":"m1","max_tokens":3,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	if code != 200 || !strings.Contains(body, `"completion_tokens":3`) || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("stream: %d %s", code, body)
	}
	if code, body := call("POST", "/embeddings", `{"model":"m1","input":["a","b"]}`); code != 200 || strings.Count(body, `"object":"embedding"`) != 2 {
		t.Errorf("embeddings: %d %s", code, body)
	}
	if code, body := call("POST", "/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`); code != 404 {
		t.Errorf("unknown model: %d %s, want 404", code, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop after its context ended")
	}
	if _, err := client.Get(base + "/models"); err == nil {
		t.Error("still serving after stop")
	}
}

// TestMockUpstreamFlags: bad flags are refused before anything listens.
func TestMockUpstreamFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "127.0.0.1:0", "--models", " , "},
		{"--listen", "127.0.0.1:0", "--flavor", "tgi"},
		{"--listen", "127.0.0.1:0", "extra"},
	} {
		if err := runMockUpstream(context.Background(), args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
