package openai

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// TestAbortFinishIsAnError plays an upstream that gives up part way and
// says so only in its finish reason — vLLM's and SGLang's "abort" (a
// request the engine aborted), or "error" — streamed or as one answer.
// Mapped to "stop", it was a complete answer, billed in full; it is the
// upstream's failure (docs/billing.md rows 12 and 13).
func TestAbortFinishIsAnError(t *testing.T) {
	for _, finish := range []string{"abort", "error"} {
		for _, stream := range []bool{true, false} {
			name := finish + " one answer"
			body := `{"choices":[{"index":0,"message":{"content":"Hel"},"finish_reason":"` + finish + `"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`
			if stream {
				name = finish + " streamed"
				body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
					"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"" + finish + "\"}]}\n\n" +
					"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"
			}
			t.Run(name, func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if stream {
						w.Header().Set("Content-Type", "text/event-stream")
					} else {
						w.Header().Set("Content-Type", "application/json")
					}
					io.WriteString(w, body)
				}))
				defer srv.Close()
				e, err := New(Config{BaseURL: srv.URL + "/v1", Models: []task.ModelVersion{{Name: "m", Digest: digest}},
					MetricsURL: MetricsOff, Logger: quietLogger()})
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				tk := task.Task{Kind: task.KindChat, Model: "m", Messages: []task.Message{{Role: "user", Content: "hi"}}, Stream: stream}
				if !stream {
					tk.Deadline = time.Now().Add(time.Hour) // asked for as one answer
				}
				var got collected
				res, err := e.Generate(context.Background(), &tk, got.emit)
				if err == nil {
					t.Fatalf("finish %q became a complete answer: text %q, %+v", finish, got.text, res)
				}
				checkAPIErr(t, err, 502, "upstream_error")
			})
		}
	}
}
