package scheduler

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// hungConn is a worker that never answers and ignores cancels: Run returns
// only when its context ends.
type hungConn struct {
	runs      atomic.Int32
	cancelled atomic.Int32  // runs whose context ended
	gone      chan struct{} // closed when the test ends
}

func (c *hungConn) Run(ctx context.Context, _ *task.Batch, _ func(task.Event)) error {
	c.runs.Add(1)
	select {
	case <-ctx.Done():
		c.cancelled.Add(1)
		return ctx.Err()
	case <-c.gone:
		return errors.New("test over")
	}
}

func (c *hungConn) Cancel(context.Context, string, int) error { return nil }

// TestDispatchDeadlineWithHungWorker: a request's deadline ends Dispatch
// with 504 although the worker never answers, whether the one-task frame
// runs on the dispatching goroutine (an unstreamed task, under the
// request's context) or on its own (a streamed one), and the worker is not
// ejected for it.
func TestDispatchDeadlineWithHungWorker(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "unstreamed (inline)", true: "streamed"}[stream]
		t.Run(name, func(t *testing.T) {
			conn := &hungConn{gone: make(chan struct{})}
			t.Cleanup(func() { close(conn.gone) })
			s, err := New(Config{StopGrace: 50 * time.Millisecond}, Deps{Clock: clock.Real{}, Dial: func(string) Conn { return conn }})
			if err != nil {
				t.Fatal(err)
			}
			s.Upsert(&task.Registered{WorkerID: "w", URL: "http://w", MaxConcurrency: 4,
				Models: []task.ModelVersion{{Name: "m", Digest: "d"}}})
			_ = s.Heartbeat(&task.Heartbeat{WorkerID: "w", Time: time.Now()})
			tk := &task.Task{RequestID: "r", Kind: task.KindChat, Model: "m", MaxTokens: 4, Stream: stream,
				Messages: []task.Message{{Role: "user", Content: "hi"}}, Deadline: time.Now().Add(100 * time.Millisecond)}
			ctx, cancel := context.WithDeadline(context.Background(), tk.Deadline)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Dispatch(ctx, tk, func(task.Event) error { return nil }) }()
			select {
			case err := <-done:
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Status != http.StatusGatewayTimeout {
					t.Fatalf("err = %v, want a 504", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Dispatch hung past its deadline on a worker that never answers")
			}
			if conn.runs.Load() != 1 {
				t.Fatalf("%d runs, want 1", conn.runs.Load())
			}
			if !stream && conn.cancelled.Load() != 1 {
				t.Fatal("the inline run's link call did not end with the request")
			}
			// The request's deadline is not the worker's failure.
			if ws := s.Workers(); len(ws) != 1 || ws[0].EjectedUntil != nil {
				t.Fatalf("worker ejected after a request's deadline: %+v", ws)
			}
		})
	}
}
