package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// lyingWorker answers every batch of one chat task with the text "Hello."
// and a done event whose record an honest worker would send — then lets
// lie change it.
func lyingWorker(t *testing.T, lie func(tk *task.Task, ev *task.Event)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b task.Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		tk := &b.Tasks[0]
		rq, rs := tk.Digest(), task.ResponseDigest("Hello.", nil)
		ev := task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 9, CompletionTokens: 2},
			Completion: &task.Completion{RequestID: tk.RequestID, WorkerID: "0xabc", Model: tk.Model, ModelDigest: testVersion.Digest,
				RequestDigest: fmt.Sprintf("%x", rq), ResponseDigest: fmt.Sprintf("%x", rs), Subject: tk.Subject,
				PromptTokens: 9, CompletionTokens: 2, Time: t0, FinishReason: "stop"}}
		lie(tk, &ev)
		w.Header().Set("Content-Type", workers.ContentTypeNDJSON)
		delta, _ := json.Marshal(task.Event{Type: task.EventDelta, Text: "Hello.", Tokens: 2})
		done, _ := json.Marshal(ev)
		fmt.Fprintf(w, "%s\n%s\n", delta, done)
	}))
	t.Cleanup(srv.Close)
	return srv
}

var testVersion = task.ModelVersion{Name: "sim-tiny", Digest: strings.Repeat("ab", 32)}

// TestLyingWorkerRecordsRefused plays a worker that lies in its completion
// record: bills another customer, names another request, describes another
// response, claims another worker's or model's name, backdates it, or
// inflates its tokens. Each record must be refused — the link fails with a
// *RecordError naming the check, 502 worker_record_refused, not retried —
// and never delivered, so it never becomes a receipt. The honest record
// passes.
func TestLyingWorkerRecordsRefused(t *testing.T) {
	tests := []struct {
		name      string
		lie       func(tk *task.Task, ev *task.Event)
		wantCheck string // "" : honest
	}{
		{"honest", func(*task.Task, *task.Event) {}, ""},
		{"bills another customer", func(_ *task.Task, ev *task.Event) { ev.Completion.Subject = "bob" }, workers.CheckSubject},
		{"another request's digest", func(_ *task.Task, ev *task.Event) {
			other := chatTask("r0")
			other.Messages[0].Content = "something else"
			d := other.Digest()
			ev.Completion.RequestDigest = fmt.Sprintf("%x", d)
		}, workers.CheckRequest},
		{"request digest without the subject", func(tk *task.Task, ev *task.Event) {
			other := *tk
			other.Subject = ""
			d := other.Digest()
			ev.Completion.RequestDigest = fmt.Sprintf("%x", d)
		}, workers.CheckRequest},
		{"another response", func(_ *task.Task, ev *task.Event) {
			d := task.ResponseDigest("Goodbye.", nil)
			ev.Completion.ResponseDigest = fmt.Sprintf("%x", d)
		}, workers.CheckResponse},
		{"another worker", func(_ *task.Task, ev *task.Event) { ev.Completion.WorkerID = "0xdef" }, workers.CheckWorker},
		{"unregistered model version", func(_ *task.Task, ev *task.Event) {
			ev.Completion.ModelDigest = strings.Repeat("cd", 32)
		}, workers.CheckModel},
		{"backdated", func(_ *task.Task, ev *task.Event) { ev.Completion.Time = t0.Add(-time.Hour) }, workers.CheckTime},
		{"from the future", func(_ *task.Task, ev *task.Event) { ev.Completion.Time = t0.Add(time.Hour) }, workers.CheckTime},
		{"inflated completion tokens", func(_ *task.Task, ev *task.Event) {
			ev.Usage.CompletionTokens, ev.Completion.CompletionTokens = 654_321, 654_321
		}, workers.CheckCompletion},
		{"completion tokens above max_tokens", func(tk *task.Task, ev *task.Event) {
			ev.Usage.CompletionTokens, ev.Completion.CompletionTokens = tk.MaxTokens+1, tk.MaxTokens+1
		}, workers.CheckCompletion},
		{"inflated prompt tokens", func(_ *task.Task, ev *task.Event) {
			ev.Usage.PromptTokens, ev.Completion.PromptTokens = 123_456, 123_456
		}, workers.CheckPrompt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := lyingWorker(t, tc.lie)
			c := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{
				WorkerID: "0xabc", Models: []task.ModelVersion{testVersion}, Clock: clock.NewFake(t0)}})
			tk := chatTask("r0")
			tk.MaxTokens = 4
			var delivered []task.Event
			err := c.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) {
				delivered = append(delivered, ev)
			})
			if tc.wantCheck == "" {
				if err != nil {
					t.Fatalf("the honest record was refused: %v", err)
				}
				return
			}
			var re *workers.RecordError
			if !errors.As(err, &re) || re.Check != tc.wantCheck {
				t.Fatalf("err = %v, want a record refused by the %s check", err, tc.wantCheck)
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code != workers.CodeRecordRefused || workers.Retryable(err) {
				t.Errorf("err = %v: want a 502 %s, not retryable", err, workers.CodeRecordRefused)
			}
			for _, ev := range delivered {
				if ev.Type == task.EventDone {
					t.Fatal("the refused record was delivered")
				}
			}
		})
	}
}

// TestRecordBoundsHoldForHonestEngines runs the simulator (at its most
// talkative) through the link: its honest records stay within the default
// bounds.
func TestRecordBoundsHoldForHonestEngines(t *testing.T) {
	a := newAgent(t, simEngine(t))
	srv := httptest.NewServer(workers.NewHandler(a, nil))
	defer srv.Close()
	c := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{
		WorkerID: "0xabc", Models: a.Models(), Clock: clock.NewFake(t0)}})
	var tasks []task.Task
	for i, content := range []string{"", "hi", "a b c d e f g h", strings.Repeat("ü", 300), "1234567890 1234567890"} {
		tk := chatTask(fmt.Sprint("r", i))
		tk.Messages = append([]task.Message{{Role: "system", Content: "You are terse.", Name: "sys"}}, task.Message{Role: "user", Content: content})
		tk.Stream = i%2 == 0
		tasks = append(tasks, tk)
		tasks = append(tasks, task.Task{RequestID: fmt.Sprint("c", i), Kind: task.KindCompletion, Model: "sim-tiny", Prompt: content, Subject: "key_1", MaxTokens: 64})
		tasks = append(tasks, task.Task{RequestID: fmt.Sprint("e", i), Kind: task.KindEmbedding, Model: "sim-tiny", Inputs: []string{content, "x"}, Subject: "key_1"})
	}
	err := c.Run(context.Background(), &task.Batch{ID: "honest", Tasks: tasks}, func(ev task.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	_ = io.Discard
}
