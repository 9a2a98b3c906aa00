package workers_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// stallingEngine emits tokens words ("w0 w1 …", one token each), tells
// stalled, then waits until its context ends (or fails with failure at
// once), reporting its prompt tokens as an engine stopped part way does.
type stallingEngine struct {
	task.Engine
	tokens  int
	failure error
	stalled chan struct{}
}

func (s *stallingEngine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	for i := range s.tokens {
		if err := emit(task.Delta{Text: "w" + string(rune('0'+i)) + " ", Tokens: 1}); err != nil {
			return task.Result{PromptTokens: 7, CompletionTokens: i}, err
		}
	}
	s.stalled <- struct{}{}
	if s.failure != nil {
		return task.Result{PromptTokens: 7, CompletionTokens: s.tokens}, s.failure
	}
	<-ctx.Done()
	return task.Result{PromptTokens: 7, CompletionTokens: s.tokens}, context.Cause(ctx)
}

// TestTaskEndedEarly: a generation stopped part way ends with a record of
// exactly the tokens generated when they are billable — cancelled (client
// gone or deadline), or streamed to its client before an engine failure —
// and with no record otherwise.
func TestTaskEndedEarly(t *testing.T) {
	upstreamDown := apierr.Unavailable("upstream_error", "the upstream failed", nil)
	upstreamDown.Status = http.StatusBadGateway
	tests := []struct {
		name       string
		stream     bool
		tokens     int
		stop       string // "cancel", "deadline" or "" (the engine fails)
		wantType   task.EventType
		wantFinish string
		wantStatus int // of the event's error
	}{
		{"streamed, client gone", true, 3, "cancel", task.EventDone, task.FinishCancelled, workers.StatusClientClosed},
		{"unstreamed, client gone", false, 3, "cancel", task.EventDone, task.FinishCancelled, workers.StatusClientClosed},
		{"streamed, deadline", true, 3, "deadline", task.EventDone, task.FinishCancelled, http.StatusGatewayTimeout},
		{"unstreamed, deadline", false, 2, "deadline", task.EventDone, task.FinishCancelled, http.StatusGatewayTimeout},
		{"streamed, engine fails after tokens", true, 3, "", task.EventDone, task.FinishError, http.StatusBadGateway},
		{"unstreamed, engine fails after tokens", false, 3, "", task.EventFailed, "", http.StatusBadGateway},
		{"streamed, cancelled before any token", true, 0, "cancel", task.EventFailed, "", workers.StatusClientClosed},
		{"streamed, engine fails before any token", true, 0, "", task.EventFailed, "", http.StatusBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eng := &stallingEngine{Engine: simEngine(t), tokens: tc.tokens, stalled: make(chan struct{}, 1)}
			if tc.stop == "" {
				eng.failure = upstreamDown
			}
			clk := clock.NewFake(t0)
			a := workers.NewAgent(workers.AgentConfig{WorkerID: "0xabc", Engine: eng, Clock: clk})
			tk := chatTask("r0")
			tk.Stream = tc.stream
			tk.Deadline = t0.Add(time.Minute)
			var c collected
			done := make(chan error, 1)
			go func() {
				done <- a.RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, c.emit)
			}()
			<-eng.stalled
			switch tc.stop {
			case "cancel":
				a.Cancel("b", 0)
			case "deadline":
				clk.Advance(time.Minute)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			ev := c.last(t, 0)
			if ev.Type != tc.wantType || ev.FinishReason != tc.wantFinish {
				t.Fatalf("ended %q finish %q, want %q %q (%+v)", ev.Type, ev.FinishReason, tc.wantType, tc.wantFinish, ev.Error)
			}
			if ev.Error == nil || ev.Error.Status != tc.wantStatus {
				t.Errorf("error %+v, want status %d", ev.Error, tc.wantStatus)
			}
			_, recorded := a.Produced("r0")
			if ev.Type == task.EventFailed {
				if recorded {
					t.Error("a record for a task that served nothing billable")
				}
				return
			}
			var text strings.Builder
			for _, d := range c.events[0][:len(c.events[0])-1] {
				text.WriteString(d.Text)
			}
			want := strings.Repeat("w? ", tc.tokens)
			if text.Len() != len(want) {
				t.Errorf("text %q: not the %d tokens generated", text.String(), tc.tokens)
			}
			cr := ev.Completion
			sum := sha256.Sum256([]byte(text.String()))
			if ev.Usage.CompletionTokens != tc.tokens || cr.CompletionTokens != tc.tokens || cr.PromptTokens != 7 || ev.Usage.PromptTokens != 7 {
				t.Errorf("usage %+v record %d/%d, want 7/%d", ev.Usage, cr.PromptTokens, cr.CompletionTokens, tc.tokens)
			}
			if cr.ResponseDigest != hex.EncodeToString(sum[:]) || cr.FinishReason != tc.wantFinish {
				t.Errorf("record %+v does not describe the text sent", cr)
			}
			if own, ok := a.Produced("r0"); !ok || own.CompletionTokens != tc.tokens {
				t.Errorf("the worker keeps no record to countersign: %+v %v", own, ok)
			}
		})
	}
}
