package openai

import (
	"context"
	"fmt"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

// TestStreamErrorForms plays each server's way of failing inside a stream
// that has already answered 200 — llama.cpp's `error:` field then
// `data: [DONE]` (its "exceeds the available context size"), vLLM's
// `data: {"error": {...}}` and older top-level `{"object": "error"}`,
// SGLang's `{"error": {"object": "error", ...}}`, an `event: error`, and a
// stream that ends ([DONE] or EOF) without a finish reason. Each must end
// the generation with an error carrying the upstream's status (or 502),
// never as a successful, billed empty answer.
func TestStreamErrorForms(t *testing.T) {
	forms := []struct {
		form       upstreamtest.StreamErrorForm
		status     int    // the upstream's code
		wantStatus int    // what the engine returns
		wantCode   string // "" for a pass-through 4xx without a code
	}{
		{upstreamtest.FormLlamaCpp, 400, 400, ""},
		{upstreamtest.FormLlamaCpp, 500, 502, "upstream_error"},
		{upstreamtest.FormVLLM, 400, 400, ""},
		{upstreamtest.FormVLLMObject, 400, 400, ""},
		{upstreamtest.FormVLLMObject, 500, 502, "upstream_error"},
		{upstreamtest.FormSGLang, 400, 400, ""},
		{upstreamtest.FormSGLang, 500, 502, "upstream_error"},
		{upstreamtest.FormEventError, 503, 503, "upstream_error"},
		{upstreamtest.FormNoFinish, 0, 502, "upstream_error"},
		{upstreamtest.FormEOF, 0, 502, "upstream_error"},
	}
	tasks := map[string]task.Task{
		"chat":       {Kind: task.KindChat, Model: "mock-llm", Stream: true, Messages: []task.Message{{Role: "user", Content: "a very long prompt"}}},
		"completion": {Kind: task.KindCompletion, Model: "mock-llm", Stream: true, Prompt: "a very long prompt"},
	}
	for _, f := range forms {
		for _, after := range []int{0, 2} {
			for kind, tk := range tasks {
				name := fmt.Sprintf("%s %d after %d tokens %s", f.form, f.status, after, kind)
				t.Run(name, func(t *testing.T) {
					up := upstreamtest.Start(upstreamtest.Config{})
					defer up.Close()
					up.FailNext(1, upstreamtest.Failure{Status: f.status, Type: "exceed_context_size_error", Form: f.form, AfterTokens: after,
						Message: "the request exceeds the available context size, try increasing it"})
					e := newEngine(t, up, nil)
					var got collected
					res, err := e.Generate(context.Background(), &tk, got.emit)
					if err == nil {
						t.Fatalf("no error: text %q, result %+v (a swallowed upstream error becomes a billed answer)", got.text, res)
					}
					ae := checkAPIErr(t, err, f.wantStatus, f.wantCode)
					if f.status == 400 && ae.Message != "the request exceeds the available context size, try increasing it" {
						t.Errorf("message %q: the upstream's message is lost", ae.Message)
					}
					if got.deltas != after {
						t.Errorf("%d deltas before the error, want %d", got.deltas, after)
					}
				})
			}
		}
	}
}
