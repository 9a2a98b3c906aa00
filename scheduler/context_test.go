package scheduler

import (
	"net/http"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// The failure: a prompt longer than the model's context can never be
// served, yet the deadline shedding, predicting a long prefill, answered
// 429 with a Retry-After of tens of seconds (a client would wait and
// retry for ever). Such a prompt must reach the engine, which counts it
// exactly and answers 400 context_length_exceeded, whatever the deadline.
// A prompt that fits is still shed.
func TestPromptBeyondContextIsNotShed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		context    int
		hint       int
		wantStatus int // 0: placed on the worker
	}{
		{"beyond the context: placed (the engine answers 400)", 4096, 100_000, 0},
		{"fits but the deadline cannot be met: 429", 400_000, 100_000, http.StatusTooManyRequests},
		{"context unknown: shed as before", 0, 100_000, http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.s.Upsert(&task.Registered{WorkerID: "w1", URL: "http://w1", MaxConcurrency: 4,
				Models: []task.ModelVersion{{Name: testModel, Digest: testDigest, ContextLength: tc.context}}})
			tk := chat("r")
			tk.PromptTokensHint = tc.hint // 10 s of prefill at the prior speed
			tk.Deadline = h.clk.Now().Add(time.Second)
			_, _, err := h.submit(tk)
			st, code := status(err)
			if st != tc.wantStatus {
				t.Fatalf("Submit = %v (%d %s); want status %d", err, st, code, tc.wantStatus)
			}
		})
	}
}
