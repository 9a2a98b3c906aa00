package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestWorkerOpenAIUpstream runs what a GPU provider runs: `tollgate worker
// --engine openai` next to a vLLM-like server (the upstreamtest mock), with
// the model version registered by the operator through the admin API rather
// than open registration. Requests go client → gateway → worker → upstream
// and back; upstream errors come back in OpenAI form; the worker's scraped
// vLLM load reaches the gateway's worker list; the worker serves /metrics.
func TestWorkerOpenAIUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes; skipped with -short")
	}
	up := upstreamtest.Start(upstreamtest.Config{Models: []string{"llama-3-8b"}, EmbeddingModels: []string{"llama-3-8b"}})
	defer up.Close()
	up.SetLoad(3, 5, 0.42)

	// The provider's weights: a directory whose manifest names the version.
	weights := t.TempDir()
	for name, body := range map[string]string{"config.json": `{"dim":4096}`, "model.safetensors": "not really weights"} {
		if err := os.WriteFile(filepath.Join(weights, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := workers.ManifestDigest(weights)
	if err != nil {
		t.Fatal(err)
	}

	bin := buildBinary(t)
	addr := freeAddr(t)
	base := "http://" + addr
	gw := start(t, bin, "gateway", "--listen", addr, "--data", t.TempDir(), "--api-key", apiKey,
		"--admin-key", "sk-e2e-admin", "--provider-token", providerToken, "--no-receipts")
	gw.waitFor(t, "gateway listening")

	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path, key, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}

	// The operator registers the version; only then may the worker join.
	if code, body := do("POST", "/v1/admin/models", "sk-e2e-admin", `{"name":"llama-3-8b","digest":"`+digest+`"}`); code != 200 {
		t.Fatalf("register model: %d %s", code, body)
	}
	workerAddr := freeAddr(t)
	wk := start(t, bin, "worker", "--gateway", base, "--engine", "openai", "--upstream", up.URL,
		"--model-name", "llama-3-8b", "--weights", weights, "--embeddings",
		"--listen", workerAddr, "--provider-token", providerToken, "--data", t.TempDir())
	wk.waitFor(t, "registered with gateway")

	t.Run("chat", func(t *testing.T) {
		code, body := do("POST", "/v1/chat/completions", apiKey, `{"model":"llama-3-8b","messages":[{"role":"user","content":"tell me a story"}],"max_tokens":5}`)
		if code != 200 || !strings.Contains(body, `"finish_reason":"length"`) || !strings.Contains(body, `"completion_tokens":5`) {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("streaming with usage", func(t *testing.T) {
		code, body := do("POST", "/v1/chat/completions", apiKey, `{"model":"llama-3-8b","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`)
		if code != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || !strings.Contains(body, `"completion_tokens":4`) {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("completions and embeddings", func(t *testing.T) {
		if code, body := do("POST", "/v1/completions", apiKey, `{"model":"llama-3-8b","prompt":"once upon","max_tokens":3}`); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		if code, body := do("POST", "/v1/embeddings", apiKey, `{"model":"llama-3-8b","input":["a","b","c"]}`); code != 200 || strings.Count(body, `"object":"embedding"`) != 3 {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("upstream error mapped", func(t *testing.T) {
		up.FailNext(1, upstreamtest.Failure{Status: 400, Type: "invalid_request_error", Code: "context_length_exceeded", Message: "prompt is too long"})
		code, body := do("POST", "/v1/chat/completions", apiKey, `{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}]}`)
		if code != 400 || !strings.Contains(body, `"code":"context_length_exceeded"`) || !strings.Contains(body, "prompt is too long") {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("scraped load reaches the gateway", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := do("GET", "/v1/workers", "sk-e2e-admin", "")
			if code == 200 && strings.Contains(body, `"waiting":3`) && strings.Contains(body, `"kv_cache_usage":0.42`) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker list never showed the upstream's load: %d %s", code, body)
			}
			time.Sleep(200 * time.Millisecond) // waiting on the worker's next heartbeat
		}
	})
	t.Run("worker metrics", func(t *testing.T) {
		resp, err := client.Get("http://" + workerAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// No GPU on a CI machine: the exposition is valid and empty of series.
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	})
	t.Run("unregistered version refused", func(t *testing.T) {
		other := start(t, bin, "worker", "--gateway", base, "--engine", "openai", "--upstream", up.URL,
			"--model-name", "llama-3-8b", "--model-digest", strings.Repeat("ab", 32),
			"--listen", "127.0.0.1:0", "--provider-token", providerToken, "--data", t.TempDir())
		other.waitFor(t, "is not registered with this gateway")
	})

	wk.stop(t)
	gw.stop(t)
}
