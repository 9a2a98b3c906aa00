package scheduler

// One task's dispatch (a call) and its attempts: placement on a worker,
// the inline hand-over, the events an attempt delivers, retries, the
// deadline, stopping and cancellation.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Inline hand-over states.
const (
	inlineClosed  int32 = iota
	inlineOpen          // the dispatching goroutine is in submit and will call takeInline
	inlineOffered       // a run waits in inlineRun
)

// offerInline hands run (a one-task frame's link call) to the call's own
// dispatching goroutine when that goroutine is still in submit and will run
// it next: it would otherwise only wait for the answer, so running the
// frame there saves a goroutine and the wake-up that hands the events back.
// It reports false (the caller starts a goroutine) in every other case.
func (c *call) offerInline(run func(ctx context.Context)) bool {
	if c.inline.Load() != inlineOpen {
		return false
	}
	c.inlineMu.Lock()
	defer c.inlineMu.Unlock()
	if c.inline.Load() != inlineOpen {
		return false
	}
	ctx := c.inlineCtx
	c.inlineRun = func() { run(ctx) }
	c.inline.Store(inlineOffered)
	return true
}

// takeInline closes the hand-over and returns the run offered, if any.
func (c *call) takeInline() func() {
	if c.inline.Load() == inlineClosed {
		return nil
	}
	c.inlineMu.Lock()
	defer c.inlineMu.Unlock()
	run := c.inlineRun
	c.inlineRun, c.inlineCtx = nil, nil
	c.inline.Store(inlineClosed)
	return run
}

// call is one task's dispatch, across at most two attempts.
type call struct {
	s            *Scheduler
	task         *task.Task
	onEvent      func(task.Event)
	onEnd        func(error)
	only         string // the one worker allowed ("": any)
	promptTokens int
	outputTokens int
	affinity     uint64

	// The inline hand-over (offerInline, takeInline): inlineMu is a leaf
	// lock, never held while another is taken.
	inline    atomic.Int32
	inlineMu  sync.Mutex
	inlineRun func()
	inlineCtx context.Context

	mu        sync.Mutex
	cur       *attempt
	attempts  int
	delivered bool // an event went to the client: no more retries
	done      bool
	deadlineT clock.Timer
	// stopping: stop asked the worker to end the task and the call waits
	// for its last event (until graceT), then ends with stopCause.
	stopping  bool
	stopCause error
	graceT    clock.Timer
	// linkStop ends the link of an inline run (set by sendFrame's start):
	// the run outlives its request's context by the grace.
	linkStop context.CancelFunc
}

// attempt is one placement of a call on a worker. Its fields after entry
// are guarded by the scheduler's lock.
type attempt struct {
	call  *call
	cand  *Candidate
	entry batching.Entry[*attempt]

	// queued is the "batcher.queue" span from placement until the
	// attempt's frame is sent or it leaves the queue (the zero Span with
	// tracing off). Set before the attempt is shared; ended under s.mu.
	queued obs.Span

	run       *batchRun
	index     int
	sentAt    time.Time
	firstAt   time.Time
	lf        float64 // load factor at send, to normalise what is learned
	tokens    int
	remaining int // tokens still counted in cand.assignedTokens
	ended     bool
	cancelled bool // abort asked the worker to stop it
}

// placeLocked runs a scheduling cycle and makes the chosen worker the
// call's current attempt; enqueue then hands it to that worker's batcher
// (without c.mu, since a frame may start and report back at once).
func (c *call) placeLocked(exclude string) (*attempt, error) {
	s := c.s
	req := Request{Task: c.task, PromptTokens: c.promptTokens, OutputTokens: c.outputTokens, AffinityKey: c.affinity, Exclude: exclude, Only: c.only}
	var queued obs.Span
	if s.obs.Tracing() {
		// Parented from the task's traceparent, not a ctx: a retry places
		// from the worker link's goroutine. Started outside the lock.
		_, queued = s.obs.StartFromTraceparent(context.Background(), c.task.Traceparent, "batcher.queue", obs.KindInternal)
	}
	s.mu.Lock()
	cand, err := s.cycleLocked(&req)
	if err != nil {
		s.mu.Unlock()
		queued.SetError(err)
		queued.End()
		return nil, err
	}
	a := &attempt{call: c, cand: cand, remaining: c.promptTokens + c.outputTokens, queued: queued}
	cand.assigned++
	cand.assignedTokens += a.remaining
	s.mu.Unlock()
	queued.SetWorker(cand.id)
	s.logger.Debug("task placed", "request_id", c.task.RequestID, "worker", cand.id, "model", c.task.Model,
		"attempt", c.attempts+1, "prompt_tokens", c.promptTokens)

	a.entry = batching.Entry[*attempt]{Value: a, Priority: int(c.task.Priority), Deadline: c.task.Deadline}
	if c.task.Kind == task.KindEmbedding {
		a.entry.Group = "embed\x00" + c.task.Model
	}
	c.cur = a
	c.attempts++
	return a, nil
}

// enqueue submits attempt a to its worker's batcher.
func (c *call) enqueue(a *attempt) error {
	s := c.s
	err := a.cand.batcher.Submit(&a.entry)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	a.queued.SetError(err)
	s.endAttemptLocked(a)
	s.stats.shed++
	s.mu.Unlock()
	if errors.Is(err, batching.ErrQueueFull) {
		return apierr.RateLimited(CodeOverloaded, "every worker serving this model is at capacity; retry later", time.Second)
	}
	return apierr.Unavailable(CodeNoHealthyWorker, "the chosen worker left; retry", err)
}

// attemptEvent delivers a worker event of attempt a to the client.
func (c *call) attemptEvent(a *attempt, ev task.Event) {
	c.mu.Lock()
	if c.done || c.cur != a {
		c.mu.Unlock()
		return
	}
	if ev.Type == task.EventFailed {
		if !c.stopping && !c.delivered && c.attempts < 2 && ev.Error != nil && retryable(ev.Error.Status) {
			c.retryUnlock(a, ev.Error.APIError())
			return
		}
		var err error = apierr.Internal(errors.New("worker reported a failure without details"))
		switch {
		case c.stopping:
			err = c.stopCause
		case ev.Error != nil:
			err = ev.Error.APIError()
		}
		c.finishLocked()
		c.mu.Unlock()
		c.onEnd(err)
		return
	}
	c.delivered = true
	final := ev.Type == task.EventDone
	var end error // a stopped call ends with its stop's cause, after its record
	if final {
		c.finishLocked()
		if c.stopping {
			end = c.stopCause
		}
	}
	c.mu.Unlock()
	ev.Index = 0
	c.onEvent(ev)
	if final {
		c.onEnd(end)
	}
}

// attemptFailed handles a failed attempt: retry once elsewhere if nothing
// was delivered, else end with err.
func (c *call) attemptFailed(a *attempt, err error, retry bool) {
	c.mu.Lock()
	if c.done || c.cur != a {
		c.mu.Unlock()
		return
	}
	if retry && !c.stopping && !c.delivered && c.attempts < 2 {
		c.retryUnlock(a, err)
		return
	}
	if c.stopping {
		err = c.stopCause
	}
	c.finishLocked()
	c.mu.Unlock()
	c.onEnd(err)
}

// retryUnlock places the call again, away from a's worker, and releases
// c.mu. If that fails the call ends with cause, the original failure.
func (c *call) retryUnlock(a *attempt, cause error) {
	c.s.mu.Lock()
	c.s.stats.retries++
	c.s.mu.Unlock()
	next, err := c.placeLocked(a.cand.id)
	if err != nil {
		c.finishLocked()
		c.mu.Unlock()
		c.onEnd(cause)
		return
	}
	c.mu.Unlock()
	if err := c.enqueue(next); err != nil {
		c.end(next, cause)
		return
	}
	c.abortIfDone(next)
}

// abortIfDone stops attempt a if the call ended or was stopped (deadline,
// client gone) while a was being handed to its batcher.
func (c *call) abortIfDone(a *attempt) {
	c.mu.Lock()
	done, stopping, cause := c.done, c.stopping, c.stopCause
	c.mu.Unlock()
	switch {
	case done:
		c.s.abort(a)
	case stopping:
		if c.s.abort(a) == abortDropped {
			c.end(a, cause)
		}
	}
}

// end finishes the call with err if a is still its attempt.
func (c *call) end(a *attempt, err error) {
	c.mu.Lock()
	if c.done || c.cur != a {
		c.mu.Unlock()
		return
	}
	c.finishLocked()
	c.mu.Unlock()
	c.onEnd(err)
}

func (c *call) finishLocked() {
	c.done = true
	if c.deadlineT != nil {
		c.deadlineT.Stop()
	}
	if c.graceT != nil {
		c.graceT.Stop()
	}
}

// deadlinePassed ends a call that has delivered nothing by its deadline: a
// stream that has not started, or an unstreamed task not yet answered.
// The task is stopped (see stop): an unstreamed generation that had
// produced tokens still reports them.
func (c *call) deadlinePassed() {
	c.mu.Lock()
	if c.done || c.delivered || c.stopping {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.s.mu.Lock()
	c.s.stats.expired++
	c.s.mu.Unlock()
	msg := "the request's deadline passed before it started"
	if !c.task.Stream {
		// An unstreamed task delivers its whole answer at once, at the end.
		msg = "the request's deadline passed before its answer was ready"
	}
	c.stop(apierr.Timeout(CodeDeadlineExceeded, msg, nil))
}

// stop ends the call for its request's own reason (client gone, deadline)
// and lets the worker report what it generated: a task still queued is
// dropped and the call ends at once; one on its worker is cancelled there
// and the call ends with its last event — a done event with the record of
// the tokens generated until then is delivered — or, if none comes within
// Config.StopGrace, without one. The call's error is cause either way.
func (c *call) stop(cause error) {
	if cause == nil {
		cause = context.Canceled
	}
	c.mu.Lock()
	if c.done || c.stopping {
		c.mu.Unlock()
		return
	}
	c.stopping, c.stopCause = true, cause
	a := c.cur
	c.mu.Unlock()
	if c.s.abort(a) == abortDropped {
		c.end(a, cause)
		return
	}
	c.mu.Lock()
	if !c.done {
		c.graceT = c.s.clock.AfterFunc(c.s.cfg.StopGrace, c.graceOver)
	}
	c.mu.Unlock()
}

// graceOver ends a stopped call whose worker sent no last event in time.
func (c *call) graceOver() {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	a, cause, stopLink := c.cur, c.stopCause, c.linkStop
	c.finishLocked()
	c.mu.Unlock()
	worker := ""
	if a != nil {
		worker = a.cand.id
	}
	c.s.logger.Warn("stopped task: its worker sent no last event in time; nothing recorded", "request_id", c.task.RequestID,
		"worker", worker, "grace", c.s.cfg.StopGrace)
	if stopLink != nil {
		stopLink()
	}
	c.onEnd(cause)
}

// cancel ends the call for the client's reason and stops its work.
func (c *call) cancel(cause error) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	a := c.cur
	c.finishLocked()
	c.mu.Unlock()
	c.s.abort(a)
	if cause == nil {
		cause = context.Canceled
	}
	c.onEnd(cause)
}
