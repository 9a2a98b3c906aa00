package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// getReceipt fetches a receipt with key (sdkKey's own, or the admin key).
func getReceipt(t *testing.T, d *devStack, key, id string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, d.URL()+"/v1/receipts/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("receipt %s: %d %s", id, resp.StatusCode, b)
	}
	return b
}

// TestVerifyDigestsOnRealRequests is the customer's check (issue 15 item
// 8) on the real stack: for chat (one answer and streamed), completions
// and embeddings (float and base64), the request body the client sent and
// the response body it received recompute the receipt's two digests with
// `tollgate verify --request --response`, and a changed response or
// request does not.
func TestVerifyDigestsOnRealRequests(t *testing.T) {
	d := startTestDev(t)
	dir := t.TempDir()
	for i, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a story"}],"max_tokens":12}`},
		{"/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"user","content":"Tell me a story"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"seed":7}`},
		{"/v1/completions", `{"model":"sim-tiny","prompt":"Once upon a time","max_tokens":9,"stop":["\n"]}`},
		{"/v1/completions", `{"model":"sim-tiny","prompt":"Once upon a time","stream":true}`},
		{"/v1/embeddings", `{"model":"sim-tiny","input":["a cat","a dog"]}`},
		{"/v1/embeddings", `{"model":"sim-tiny","input":"a cat","encoding_format":"base64"}`},
	} {
		t.Run(fmt.Sprint(i, tc.path), func(t *testing.T) {
			resp, body := post(t, d.URL()+tc.path, tc.body, nil)
			id := resp.Header.Get("X-Tollgate-Receipt")
			files := map[string][]byte{"req.json": []byte(tc.body), "resp.body": []byte(body), "receipt.json": getReceipt(t, d, sdkKey, id)}
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			path := func(n string) string { return filepath.Join(dir, n) }
			var out bytes.Buffer
			if err := verifyDigests(&out, path("req.json"), path("resp.body"), []string{path("receipt.json")}); err != nil {
				t.Fatalf("the client's own bodies do not check: %v\n%s", err, out.String())
			}
			if strings.Count(out.String(), "OK") != 2 {
				t.Errorf("output:\n%s", out.String())
			}
			// Through the command's flags, as a customer runs it.
			if err := runVerify(context.Background(), []string{"--request", path("req.json"), "--response", path("resp.body"), path("receipt.json")}); err != nil {
				t.Errorf("tollgate verify --request --response: %v", err)
			}
			tampered := strings.Replace(tc.body, `"model":"sim-tiny"`, `"model":"sim-tiny","temperature":0.1`, 1)
			if strings.Contains(tc.body, "temperature") {
				tampered = strings.Replace(tc.body, `"temperature":0.5`, `"temperature":0.6`, 1)
			}
			os.WriteFile(path("req2.json"), []byte(tampered), 0o600)
			if err := verifyDigests(io.Discard, path("req2.json"), "", []string{path("receipt.json")}); err == nil {
				t.Error("another request's body checks against the receipt")
			}
			other := changeText(t, body)
			os.WriteFile(path("resp2.body"), other, 0o600)
			if err := verifyDigests(io.Discard, "", path("resp2.body"), []string{path("receipt.json")}); err == nil {
				t.Errorf("a changed response checks against the receipt:\n%s", other)
			}
		})
	}
}

// changeText alters the first text (or embedding) a response carries.
func changeText(t *testing.T, body string) []byte {
	for _, key := range []string{`"content":"`, `"text":"`, `"embedding":"`} {
		for at := 0; ; {
			i := strings.Index(body[at:], key)
			if i < 0 {
				break
			}
			j := at + i + len(key)
			if j < len(body) && body[j] != '"' {
				c := byte('X')
				if body[j] == 'X' {
					c = 'Y'
				}
				return []byte(body[:j] + string(c) + body[j+1:])
			}
			at = j
		}
	}
	if i := strings.Index(body, `"embedding":[`); i >= 0 {
		j := i + len(`"embedding":[`)
		for body[j] < '1' || body[j] > '8' {
			j++
		}
		return []byte(body[:j] + string(body[j]+1) + body[j+1:])
	}
	t.Fatalf("no text in %s", body)
	return nil
}

// TestUnaryClientGoneStopsGeneration is attack 7 on the real stack: a
// client asks for one JSON answer of up to 400 tokens from a simulated
// L40S (22 ms a token) and hangs up a moment later. The gateway notices
// the closed connection, the worker stops, and the ledger holds a receipt
// for the tokens generated until then, finish reason cancelled — fewer
// than the answer the same request gets when it runs to its end.
func TestUnaryClientGoneStopsGeneration(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	o := devOptions{ln: ln, logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	o.gateway = gatewayFlags{data: t.TempDir(), apiKey: sdkKey, adminKey: "sk-admin-test", noProver: true}
	o.engine = engineFlags{kind: "sim", profile: "llama3-8b-l40s", timeScale: 1}
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
	const body = `{"model":"llama3-8b","messages":[{"role":"user","content":"Tell me a very long story"}],"max_tokens":400}`

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nX-Request-Id: req-gone\r\nContent-Length: %d\r\n\r\n%s",
		sdkKey, len(body), body)
	time.Sleep(400 * time.Millisecond) // let it generate a few tokens (not an assertion)
	conn.Close()

	var r struct {
		RequestID        string `json:"request_id"`
		Status           string `json:"status"`
		FinishReason     string `json:"finish_reason"`
		CompletionTokens int    `json:"completion_tokens"`
		Subject          string `json:"subject"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for r.RequestID == "" {
		if time.Now().After(deadline) {
			t.Fatal("no receipt for the request whose client hung up")
		}
		time.Sleep(20 * time.Millisecond)
		req, _ := http.NewRequest(http.MethodGet, d.URL()+"/v1/receipts?limit=100", nil)
		req.Header.Set("Authorization", "Bearer sk-admin-test")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct{ Data []json.RawMessage }
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		for _, raw := range page.Data {
			var x struct {
				RequestID string `json:"request_id"`
			}
			json.Unmarshal(raw, &x)
			if strings.HasPrefix(x.RequestID, "req-gone.") {
				json.Unmarshal(raw, &r)
			}
		}
	}
	// The whole answer, from the same simulator without delays.
	eng, err := sim.New(sim.Config{Profile: sim.Profiles()["llama3-8b-l40s"], NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	full, err := eng.Generate(context.Background(), &task.Task{Kind: task.KindChat, Model: "llama3-8b", MaxTokens: 400,
		Messages: []task.Message{{Role: "user", Content: "Tell me a very long story"}}}, func(task.Delta) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("receipt: %s, %d of the answer's %d tokens, finish %q", r.Status, r.CompletionTokens, full.CompletionTokens, r.FinishReason)
	if r.FinishReason != task.FinishCancelled || r.CompletionTokens == 0 || r.CompletionTokens >= full.CompletionTokens || r.Subject != "default" && r.Subject == "" {
		t.Errorf("receipt %+v: want the tokens generated before the client left (fewer than %d), finish cancelled", r, full.CompletionTokens)
	}
}
