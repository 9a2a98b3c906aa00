package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLyingWorkerEjected: a worker whose completion record bills another
// customer is refused at the link; the client gets 502
// worker_record_refused (not a retry: the work was done), the worker is
// ejected, and the refusal is logged with its reason and counted.
func TestLyingWorkerEjected(t *testing.T) {
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b task.Batch
		json.NewDecoder(r.Body).Decode(&b)
		tk := &b.Tasks[0]
		rq, rs := tk.Digest(), task.ResponseDigest("Hi", nil)
		done, _ := json.Marshal(task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 1, CompletionTokens: 1},
			Completion: &task.Completion{RequestID: tk.RequestID, RequestDigest: fmt.Sprintf("%x", rq), ResponseDigest: fmt.Sprintf("%x", rs),
				Subject: "someone-else", PromptTokens: 1, CompletionTokens: 1}})
		delta, _ := json.Marshal(task.Event{Type: task.EventDelta, Text: "Hi", Tokens: 1})
		w.Header().Set("Content-Type", workers.ContentTypeNDJSON)
		fmt.Fprintf(w, "%s\n%s\n", delta, done)
	}))
	defer liar.Close()
	var logs logBuffer
	s, err := New(Config{}, Deps{
		Clock:      clock.Real{},
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
		DialWorker: func(w *task.Registered) Conn { return workers.NewClient(w.URL, workers.ClientOptions{}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	model := task.ModelVersion{Name: "m", Digest: strings.Repeat("ab", 32)}
	s.Upsert(&task.Registered{WorkerID: "liar", URL: liar.URL, MaxConcurrency: 4, Models: []task.ModelVersion{model}})
	for _, stream := range []bool{false, true} {
		tk := &task.Task{RequestID: fmt.Sprint("r", stream), Kind: task.KindChat, Model: "m", Subject: "alice", Stream: stream,
			Messages: []task.Message{{Role: "user", Content: "hello"}}}
		var recorded bool
		err := s.Dispatch(context.Background(), tk, func(ev task.Event) error {
			recorded = recorded || ev.Type == task.EventDone
			return nil
		})
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code != workers.CodeRecordRefused {
			t.Fatalf("stream %v: err = %v, want 502 %s", stream, err, workers.CodeRecordRefused)
		}
		if recorded {
			t.Fatal("the lying record reached the caller")
		}
		ws := s.Workers()
		if len(ws) != 1 || ws[0].EjectedUntil == nil {
			t.Fatalf("the lying worker was not ejected: %+v", ws)
		}
		// Let it back in for the next round.
		s.mu.Lock()
		s.workers["liar"].setEjected(s.clock.Now())
		s.mu.Unlock()
	}
	if st := s.Stats(); st.RecordsRefused != 2 {
		t.Errorf("records refused %d, want 2", st.RecordsRefused)
	}
	if !strings.Contains(logs.String(), "completion record refused") || !strings.Contains(logs.String(), "(subject)") {
		t.Errorf("the ejection does not log its reason:\n%s", logs.String())
	}
}
