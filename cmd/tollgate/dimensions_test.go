package main

import (
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

func embeddingsRequest(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/embeddings", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Embeddings dimensions reach an upstream that serves them (vectors of the
// length asked, and a group of tasks with different lengths is split per
// length); a model whose engine cannot (the simulator) answers 400 naming
// dimensions before dispatch.
func TestEmbeddingDimensionsEndToEnd(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{EmbeddingModels: []string{"mock-llm"}, EmbeddingDim: 16})
	t.Cleanup(up.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := devOptions{ln: ln, logger: slog.New(slog.DiscardHandler)}
	o.gateway = gatewayFlags{data: t.TempDir(), apiKey: sdkKey, adminKey: "sk-admin-test", noProver: true}
	o.engine = engineFlags{kind: "openai", upstream: up.URL, modelName: "mock-llm", upstreamDigest: strings.Repeat("ab", 32), embeddings: true}
	d, err := startDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop() })
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"model":"mock-llm","input":["a","b"],"dimensions":4}`, 4},
		{`{"model":"mock-llm","input":"a","dimensions":16}`, 16},
		{`{"model":"mock-llm","input":"a"}`, 16},
	} {
		status, body := embeddingsRequest(t, d.URL(), c.body)
		var r struct {
			Data []struct {
				Embedding []float32 `json:"embedding"`
			} `json:"data"`
		}
		if status != 200 || json.Unmarshal([]byte(body), &r) != nil || len(r.Data) == 0 {
			t.Fatalf("%s: %d %s", c.body, status, body)
		}
		for _, e := range r.Data {
			if len(e.Embedding) != c.want {
				t.Errorf("%s: a vector of %d dimensions, want %d", c.body, len(e.Embedding), c.want)
			}
		}
	}
	// More than the model has: the upstream's 400 reaches the client.
	if status, body := embeddingsRequest(t, d.URL(), `{"model":"mock-llm","input":"a","dimensions":17}`); status != 400 || !strings.Contains(body, "dimensions") {
		t.Errorf("dimensions over the model's: %d %s", status, body)
	}

	sim, err := startDevLogged(t.TempDir(), false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.stop() })
	status, body := embeddingsRequest(t, sim.URL(), `{"model":"sim-tiny","input":"a","dimensions":4}`)
	if status != 400 || !strings.Contains(body, `"param":"dimensions"`) || !strings.Contains(body, "unsupported_parameter") {
		t.Errorf("dimensions on the simulator: %d %s", status, body)
	}
}
