package workers

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// BenchmarkCheckRecord is the gateway's per-request cost of checking a
// completion record: hashing a 64-token answer's deltas as they pass and
// checking the done event (request digest recomputed from the task).
func BenchmarkCheckRecord(b *testing.B) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tk := &task.Task{RequestID: "req_abcdefghijklmnopqrstuvwxyz", Kind: task.KindChat, Model: "m", Subject: "team-a", MaxTokens: 64,
		Temperature: 1, TopP: 1, Messages: []task.Message{{Role: "user", Content: "Tell me a short story about a cat"}}}
	tokens := make([]string, 64)
	var text []byte
	for i := range tokens {
		tokens[i] = " word"
		text = append(text, tokens[i]...)
	}
	rq, rs := tk.Digest(), task.ResponseDigest(string(text), nil)
	mv := task.ModelVersion{Name: "m", Digest: hex.EncodeToString(rq[:])}
	ev := &task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 12, CompletionTokens: 64},
		Completion: &task.Completion{RequestID: tk.RequestID, WorkerID: "0xabc", Model: "m", ModelDigest: mv.Digest,
			RequestDigest: hex.EncodeToString(rq[:]), ResponseDigest: hex.EncodeToString(rs[:]), Subject: "team-a",
			PromptTokens: 12, CompletionTokens: 64, Time: now}}
	p := &RecordPolicy{WorkerID: "0xabc", Models: []task.ModelVersion{mv}, Clock: clock.NewFake(now)}
	b.ReportAllocs()
	for b.Loop() {
		var r relayed
		for _, tok := range tokens {
			r.add(tok)
		}
		if err := p.checkRecord(0, tk, ev, &r, now); err != nil {
			b.Fatal(err)
		}
	}
}
