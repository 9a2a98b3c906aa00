package workers

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// A generation that ends in a tool call relays no text, only the call: its
// completion tokens are bounded by the call's bytes, so an honest worker
// is not refused (and ejected) for a long call, while a worker inflating
// the tokens of a short call still is.
func TestRecordCompletionBoundCountsToolCalls(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tk := &task.Task{RequestID: "req_1", Kind: task.KindChat, Model: "m", Subject: "team-a", Temperature: 1, TopP: 1,
		Messages: []task.Message{{Role: "user", Content: "weather?"}},
		Tools:    []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "weather"}}}}
	args := `{"city":"` + strings.Repeat("x", 200) + `"}`
	rq := tk.Digest()
	mv := task.ModelVersion{Name: "m", Digest: strings.Repeat("ab", 32)}
	record := func(tokens int, rs string) *task.Event {
		return &task.Event{Type: task.EventDone, FinishReason: task.FinishToolCalls, Usage: &task.Usage{PromptTokens: 12, CompletionTokens: tokens},
			Completion: &task.Completion{RequestID: tk.RequestID, WorkerID: "0xabc", Model: "m", ModelDigest: mv.Digest,
				RequestDigest: hex.EncodeToString(rq[:]), ResponseDigest: rs, Subject: "team-a",
				PromptTokens: 12, CompletionTokens: tokens, Time: now}}
	}
	p := &RecordPolicy{WorkerID: "0xabc", Models: []task.ModelVersion{mv}, Clock: clock.NewFake(now)}
	for _, tc := range []struct {
		name   string
		tokens int
		ok     bool
	}{
		{"honest long call", 80, true},
		{"inflated", 5000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r relayed
			for _, d := range []task.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "weather"}, {Index: 0, Arguments: args}} {
				if err := r.addRich(tk, &task.Event{Type: task.EventDelta, ToolCalls: []task.ToolCallDelta{d}}); err != nil {
					t.Fatal(err)
				}
			}
			err := p.checkRecord(0, tk, record(tc.tokens, r.digest()), &r, now)
			var re *RecordError
			if tc.ok && err != nil || !tc.ok && !(errors.As(err, &re) && re.Check == CheckCompletion) {
				t.Errorf("err = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
