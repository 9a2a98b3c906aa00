package scheduler

import (
	"context"
	"sync"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Error codes of the scheduler's own refusals.
const (
	CodeModelNotFound      = "model_not_found"     // 404: no registered worker serves the model
	CodeNoHealthyWorker    = "no_healthy_worker"   // 503: workers serve it but none is in rotation
	CodeOverloaded         = "overloaded"          // 429: every capable worker's queue is full
	CodeDeadlineUnmeetable = "deadline_unmeetable" // 429: no worker is predicted to start before the deadline
	CodeDeadlineExceeded   = "deadline_exceeded"   // 504: the deadline passed before the first token
)

// Dispatch places t on a worker and delivers its events in order to
// onEvent, with Index rewritten to 0. It returns nil after the task's
// EventDone has been delivered, or an error (an *apierr.Error in its chain):
// 404 model_not_found, 503 no_healthy_worker, 429 overloaded or
// deadline_unmeetable (with RetryAfter), 504 deadline_exceeded when the
// deadline passes before the first event, or the worker's own failure. A
// task's EventFailed is returned as its error, not delivered. If onEvent
// returns an error the task is cancelled on the worker and that error is
// returned. A task that has delivered no event is retried once on another
// worker when its worker fails.
//
// When ctx ends first (the client went away, or the deadline passed) the
// task is stopped on its worker and Dispatch keeps delivering its events
// until the worker's last one, for at most Config.StopGrace: a generation
// that had produced tokens ends with a done event whose record counts them
// (finish reason task.FinishCancelled), which onEvent receives before
// Dispatch returns ctx's error. The caller records it; it is billable.
//
// A task with Stream false whose frame holds only itself (the idle path)
// has its link call run on the calling goroutine, under ctx: its events
// then reach onEvent together when the call returns, which is all a client
// of one answer waits for, and no goroutine is started or woken.
//
// With Deps.Obs tracing, Dispatch runs under a "scheduler.dispatch" span
// (a child of ctx's span) and sets t.Traceparent to it, so the batcher's
// queue span and the worker's task spans join the request's trace.
func (s *Scheduler) Dispatch(ctx context.Context, t *task.Task, onEvent func(task.Event) error) (err error) {
	return s.dispatch(ctx, "", t, onEvent)
}

// dispatch is Dispatch, on worker only when that is set.
func (s *Scheduler) dispatch(ctx context.Context, only string, t *task.Task, onEvent func(task.Event) error) (err error) {
	ctx, span := s.obs.Start(ctx, "scheduler.dispatch", obs.KindInternal)
	if span.Recording() {
		defer func() { span.SetError(err); span.End() }()
		if t != nil {
			t.Traceparent = obs.Traceparent(ctx)
			span.SetRequest(t.RequestID, operation(t.Kind), t.Model)
		}
	}
	q := &eventQueue{notify: make(chan struct{}, 1), evs: make([]task.Event, 0, 2)}
	// A task whose client wants one answer may have its batch run on this
	// goroutine, which would only wait otherwise (see call.offerInline).
	h, err := s.submit(ctx, t, only, q.push, q.end, t != nil && !t.Stream)
	if err != nil {
		return err
	}
	if span.Recording() {
		span.SetWorker(h.c.workerID())
	}
	if run := h.c.takeInline(); run != nil {
		run()
	}
	ctxDone := ctx.Done()
	for {
		evs, end, ended := q.take()
		for _, ev := range evs {
			if err := onEvent(ev); err != nil {
				h.Cancel(err)
				return err
			}
		}
		if ended {
			return end
		}
		select {
		case <-q.notify:
		case <-ctxDone:
			// Stop the task, and wait (StopGrace at most) for the
			// record of what it generated.
			h.c.stop(apierr.From(context.Cause(ctx)))
			ctxDone = nil
		}
	}
}

// workerID is the worker of the call's current attempt ("" before one).
func (c *call) workerID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.cand.id
}

// eventQueue hands events from the worker link to the Dispatch goroutine
// without ever blocking the link: a slow client does not stall the batch.
// Two slices take turns (the one handed out by take comes back as the next
// one to fill), so a stream of events allocates no slice per event.
type eventQueue struct {
	mu     sync.Mutex
	evs    []task.Event
	spare  []task.Event
	ended  bool
	err    error
	notify chan struct{}
}

func (q *eventQueue) push(ev task.Event) {
	q.mu.Lock()
	q.evs = append(q.evs, ev)
	q.mu.Unlock()
	q.wake()
}

func (q *eventQueue) end(err error) {
	q.mu.Lock()
	q.ended, q.err = true, err
	q.mu.Unlock()
	q.wake()
}

func (q *eventQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take returns the events queued so far; they stay valid until the next
// call to take.
func (q *eventQueue) take() ([]task.Event, error, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	clear(q.spare) // let the previous batch's texts go
	q.evs, q.spare = q.spare[:0], evs
	return evs, q.err, q.ended
}

// Handle is a task started with Submit.
type Handle struct{ c *call }

// Cancel stops the task: it is dropped from its worker's queue or cancelled
// on the worker, and its onEnd is called with cause unless it has ended.
func (h *Handle) Cancel(cause error) { h.c.cancel(cause) }

// Submit is Dispatch without a goroutine: it places t and returns at once;
// onEvent then gets the task's events in order (Index 0, EventFailed
// excluded) and onEnd is called exactly once, with nil after EventDone or
// with the error. Both are called from the scheduler's internal goroutines
// (or timers) and must not block. Admission errors are returned directly and
// then neither callback is called.
func (s *Scheduler) Submit(t *task.Task, onEvent func(task.Event), onEnd func(error)) (*Handle, error) {
	return s.submit(context.Background(), t, "", onEvent, onEnd, false)
}

// SubmitTo is Submit on one given worker and no other (the asynchronous
// DispatchTo): the auditor's re-execution where the caller cannot block,
// as in the virtual-time bench.
func (s *Scheduler) SubmitTo(t *task.Task, workerID string, onEvent func(task.Event), onEnd func(error)) (*Handle, error) {
	if workerID == "" {
		return nil, apierr.BadRequest("worker", "missing_worker", "no worker named")
	}
	return s.submit(context.Background(), t, workerID, onEvent, onEnd, false)
}

// submit is Submit; with inline, a frame of just this task sent while the
// caller is still in submit is left for the caller to run (takeInline),
// under ctx (the caller's: it bounds the link stream it will wait on).
func (s *Scheduler) submit(ctx context.Context, t *task.Task, only string, onEvent func(task.Event), onEnd func(error), inline bool) (*Handle, error) {
	if t == nil || t.Model == "" {
		return nil, apierr.BadRequest("model", "missing_model", "the task names no model")
	}
	c := &call{s: s, task: t, only: only, onEvent: onEvent, onEnd: onEnd}
	if inline {
		c.inlineCtx = ctx
		c.inline.Store(inlineOpen)
	}
	c.promptTokens = estimatePromptTokens(t)
	c.outputTokens = s.estimateOutputTokens(t)
	c.affinity = s.affinityKey(t)
	c.mu.Lock()
	a, err := c.placeLocked("")
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	if !t.Deadline.IsZero() {
		c.deadlineT = s.clock.AfterFunc(t.Deadline.Sub(s.clock.Now()), c.deadlinePassed)
	}
	c.mu.Unlock()
	if err := c.enqueue(a); err != nil {
		c.mu.Lock()
		c.finishLocked()
		c.mu.Unlock()
		return nil, err
	}
	c.abortIfDone(a)
	return &Handle{c: c}, nil
}
