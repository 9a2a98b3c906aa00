package openai

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestLyingUpstreamRefused plays an upstream that reports usage it never
// spent: "hi" answered with a few words, billed as 123,456 prompt and
// 654,321 completion tokens. The worker passes the upstream's usage on
// honestly; the gateway's link must refuse the record by its bounds, so
// it never becomes a receipt. With honest usage the same path passes.
func TestLyingUpstreamRefused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		usage     *upstreamtest.Usage
		stream    bool
		wantCheck string
	}{
		{"honest", nil, true, ""},
		{"both inflated, streamed", &upstreamtest.Usage{PromptTokens: 123_456, CompletionTokens: 654_321}, true, workers.CheckPrompt},
		{"both inflated, one answer", &upstreamtest.Usage{PromptTokens: 123_456, CompletionTokens: 654_321}, false, workers.CheckPrompt},
		{"completion inflated", &upstreamtest.Usage{PromptTokens: 4, CompletionTokens: 654_321}, true, workers.CheckCompletion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.Start(upstreamtest.Config{ReportUsage: tc.usage})
			defer up.Close()
			e := newEngine(t, up, nil)
			agent := workers.NewAgent(workers.AgentConfig{WorkerID: "0xabc", Engine: e})
			srv := httptest.NewServer(workers.NewHandler(agent, quietLogger()))
			defer srv.Close()
			link := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{WorkerID: "0xabc", Models: e.Models()}})
			tk := task.Task{RequestID: "r", Kind: task.KindChat, Model: "mock-llm", Subject: "alice", Stream: tc.stream,
				Messages: []task.Message{{Role: "user", Content: "hi"}}}
			if !tc.stream {
				tk.Deadline = time.Now().Add(hangGuard) // asked for as one answer
			}
			var record *task.Completion
			err := link.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) {
				if ev.Type == task.EventDone {
					record = ev.Completion
				}
			})
			if tc.wantCheck == "" {
				if err != nil || record == nil {
					t.Fatalf("honest usage refused: %v", err)
				}
				return
			}
			var re *workers.RecordError
			if !errors.As(err, &re) || re.Check != tc.wantCheck {
				t.Fatalf("err = %v, want a record refused by the %s check", err, tc.wantCheck)
			}
			if record != nil {
				t.Fatalf("the inflated record was delivered: %+v", record)
			}
		})
	}
}
