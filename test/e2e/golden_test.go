package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sharedModelDir is ../shared/models/stories260K beside the checkout (or
// under $TOLLGATE_SHARED).
func sharedModelDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("TOLLGATE_SHARED")
	if root == "" {
		root = filepath.Join("..", "..", "..", "shared")
	}
	dir, err := filepath.Abs(filepath.Join(root, "models", "stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "golden.json")); err != nil {
		t.Skipf("stories260K not found at %s (set TOLLGATE_SHARED): %v", dir, err)
	}
	return dir
}

type goldenCase struct {
	Prompt       string `json:"prompt"`
	Steps        int    `json:"steps"`
	PromptTokens []int  `json:"prompt_tokens"`
	NextTokens   []int  `json:"next_tokens"`
	Text         string `json:"text"`
}

// TestGoldenThroughGateway reproduces every case of golden.json through
// `tollgate dev` on the built-in engine with temperature 0 on
// /v1/completions, all cases at once so they share the engine's batch.
// The mapping (documented in workers/engine/llama): max_tokens =
// steps − len(prompt_tokens) + 1, and the API returns the text after the
// prompt, so the expected completion is golden text minus the prompt.
func TestGoldenThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes; skipped with -short")
	}
	dir := sharedModelDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden struct{ Cases []goldenCase }
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Cases) == 0 {
		t.Fatal("golden.json has no cases")
	}

	bin := buildBinary(t)
	addr := freeAddr(t)
	dev := start(t, bin, "dev", "--listen", addr, "--data", t.TempDir(), "--api-key", apiKey, "--model", dir, "--no-prover")
	dev.waitFor(t, "registered with gateway")

	client := &http.Client{Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	for i, c := range golden.Cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			maxTokens := c.Steps - len(c.PromptTokens) + 1
			body, _ := json.Marshal(map[string]any{"model": "stories260K", "prompt": c.Prompt, "temperature": 0, "max_tokens": maxTokens})
			req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+addr+"/v1/completions", strings.NewReader(string(body)))
			req.Header.Set("Authorization", "Bearer "+apiKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("case %d: %v", i, err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var out struct {
				Choices []struct {
					Text         string `json:"text"`
					FinishReason string `json:"finish_reason"`
				} `json:"choices"`
				Usage struct {
					PromptTokens     int `json:"prompt_tokens"`
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Choices) != 1 {
				t.Errorf("case %d (%q): %d %s", i, c.Prompt, resp.StatusCode, b)
				return
			}
			want := strings.TrimPrefix(c.Text, c.Prompt)
			if got := out.Choices[0].Text; got != want {
				t.Errorf("case %d (%q): text\n got %q\nwant %q", i, c.Prompt, got, want)
			}
			// Generated tokens: golden's next_tokens after the forced prompt
			// positions, cut at BOS (run.c stops there and prints nothing).
			gen := c.NextTokens[len(c.PromptTokens)-1:]
			for j, tok := range gen {
				if tok == 1 {
					gen = gen[:j]
					break
				}
			}
			if out.Usage.PromptTokens != len(c.PromptTokens) || out.Usage.CompletionTokens != len(gen) {
				t.Errorf("case %d (%q): usage %+v, want prompt %d completion %d", i, c.Prompt, out.Usage, len(c.PromptTokens), len(gen))
			}
		}()
	}
	wg.Wait()
	dev.stop(t)
}
