package scheduler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// stoppableConn is a worker that streams one token, then generates until
// cancelled; a cancel (unless deaf) ends the task with a done event whose
// record counts that token, as the agent does. started is closed once the
// batch runs.
type stoppableConn struct {
	deaf    bool
	started chan struct{}
	once    sync.Once
	cancel  chan struct{}
	stop    sync.Once
}

func (c *stoppableConn) Run(ctx context.Context, b *task.Batch, onEvent func(task.Event)) error {
	onEvent(task.Event{Index: 0, Type: task.EventDelta, Text: "Once", Tokens: 1})
	c.once.Do(func() { close(c.started) })
	select {
	case <-c.cancel:
		onEvent(task.Event{Index: 0, Type: task.EventDone, FinishReason: task.FinishCancelled,
			Usage: &task.Usage{PromptTokens: 3, CompletionTokens: 1}, Completion: &task.Completion{RequestID: b.Tasks[0].RequestID, CompletionTokens: 1},
			Error: &task.EventError{Status: workers.StatusClientClosed, Code: workers.CodeCancelled, Message: "cancelled"}})
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *stoppableConn) Cancel(context.Context, string, int) error {
	if !c.deaf {
		c.stop.Do(func() { close(c.cancel) })
	}
	return nil
}

// TestStoppedTaskDeliversItsRecord: a request whose client goes away
// mid-generation still gets its worker's record of the tokens generated
// (the ID it was handed must resolve to them), streamed or not (an
// unstreamed one-task frame runs inline, under the request's context); a
// worker that never answers the stop is waited for only StopGrace.
func TestStoppedTaskDeliversItsRecord(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stream     bool
		deaf       bool
		wantRecord bool
	}{
		{"streamed", true, false, true},
		{"unstreamed (inline)", false, false, true},
		{"streamed, worker deaf to the stop", true, true, false},
		{"unstreamed, worker deaf to the stop", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := &stoppableConn{deaf: tc.deaf, started: make(chan struct{}), cancel: make(chan struct{})}
			s, err := New(Config{StopGrace: 100 * time.Millisecond}, Deps{Clock: clock.Real{}, Dial: func(string) Conn { return conn }})
			if err != nil {
				t.Fatal(err)
			}
			s.Upsert(&task.Registered{WorkerID: "w", URL: "http://w", MaxConcurrency: 4, Models: []task.ModelVersion{{Name: "m", Digest: "d"}}})
			_ = s.Heartbeat(&task.Heartbeat{WorkerID: "w", Time: time.Now()})
			tk := &task.Task{RequestID: "r", Kind: task.KindChat, Model: "m", Stream: tc.stream, Messages: []task.Message{{Role: "user", Content: "hi"}}}
			gone := apierr.Unavailable("client_gone", "the client went away", nil)
			ctx, cancel := context.WithCancelCause(context.Background())
			go func() { <-conn.started; cancel(gone) }()
			var mu sync.Mutex
			var got []task.Event
			done := make(chan error, 1)
			go func() {
				done <- s.Dispatch(ctx, tk, func(ev task.Event) error {
					mu.Lock()
					got = append(got, ev)
					mu.Unlock()
					return nil
				})
			}()
			var derr error
			select {
			case derr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Dispatch hung after its request ended")
			}
			if !errors.Is(derr, gone) {
				t.Errorf("err = %v, want the request's cause", derr)
			}
			mu.Lock()
			defer mu.Unlock()
			var record *task.Event
			for i := range got {
				if got[i].Type == task.EventDone {
					record = &got[i]
				}
			}
			switch {
			case tc.wantRecord && (record == nil || record.FinishReason != task.FinishCancelled || record.Usage.CompletionTokens != 1):
				t.Errorf("events %+v: no record of the token generated", got)
			case !tc.wantRecord && record != nil:
				t.Errorf("a record from a worker deaf to the stop: %+v", record)
			}
			if ws := s.Workers(); len(ws) != 1 || ws[0].EjectedUntil != nil {
				t.Errorf("worker ejected for its client's going away: %+v", ws)
			}
		})
	}
}
