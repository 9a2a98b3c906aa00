package scheduler

// Batch runs on a worker: sending a frame over the link, routing the
// worker's events to their attempts, the run's end, failures, ejection
// and aborting one attempt on its worker.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// batchRun is one frame in flight on a worker.
type batchRun struct {
	cand  *Candidate
	batch task.Batch
	atts  []*attempt
}

// sendFrame is the batcher's Send: it starts one batch on the worker.
func (s *Scheduler) sendFrame(cand *Candidate, frame []*batching.Entry[*attempt]) {
	now := s.clock.Now()
	run := &batchRun{cand: cand, atts: make([]*attempt, len(frame))}
	run.batch.Tasks = make([]task.Task, len(frame))
	s.mu.Lock()
	s.batchSeq++
	run.batch.ID = s.batchBase + "-" + strconv.FormatUint(s.batchSeq, 36)
	s.stats.batchSize.Observe(float64(len(frame)))
	s.metrics.RecordBatchSize(context.Background(), len(frame))
	for i, e := range frame {
		a := e.Value
		a.run, a.index, a.sentAt = run, i, now
		a.lf = loadFactor(cand.assigned, cand.slots)
		run.atts[i] = a
		run.batch.Tasks[i] = *a.call.task
		s.stats.queueWait.ObserveDuration(e.Waited())
		s.metrics.RecordQueueWait(context.Background(), e.Waited())
		a.queued.SetInt("tollgate.batch.size", len(frame))
		a.queued.End()
	}
	conn := cand.conn
	s.mu.Unlock()

	onEvent := func(ev task.Event) { s.workerEvent(run, ev) }
	onEnd := func(err error) { s.runEnded(run, err) }
	if sc, ok := conn.(StartConn); ok {
		sc.Start(&run.batch, onEvent, onEnd)
		return
	}
	start := func(ctx context.Context) {
		link := ctx
		if ctx.Done() != nil && len(run.atts) == 1 {
			// Only an inline run has its request's context. When it ends
			// (client gone, deadline) the task is stopped as Dispatch
			// stops one, and the link stays open for the worker's last
			// event, the record of what it generated, until the call ends
			// or the grace passes (graceOver ends the link).
			c := run.atts[0].call
			var stopLink context.CancelFunc
			link, stopLink = context.WithCancel(context.WithoutCancel(ctx))
			defer stopLink()
			c.mu.Lock()
			c.linkStop = stopLink
			c.mu.Unlock()
			unwatch := context.AfterFunc(ctx, func() { c.stop(apierr.From(context.Cause(ctx))) })
			defer unwatch()
		}
		err := conn.Run(link, &run.batch, onEvent)
		if err != nil && link != ctx && link.Err() != nil {
			// The request's end (its grace over), not the worker's
			// failure: report the run cancelled so the worker is not
			// ejected.
			err = fmt.Errorf("%w: the request ended: %w", context.Canceled, err)
		}
		onEnd(err)
	}
	if len(frame) == 1 && frame[0].Value.call.offerInline(start) {
		// A frame of one task, run by that task's own dispatching goroutine
		// under its request's context: the stream is the task's alone.
		return
	}
	// The batch outlives any one request: its tasks are cancelled one by
	// one through Conn.Cancel, and the stream ends when all have ended.
	go start(context.Background())
}

// workerEvent routes one event of a running batch.
func (s *Scheduler) workerEvent(run *batchRun, ev task.Event) {
	if ev.Index < 0 || ev.Index >= len(run.atts) {
		s.logger.Warn("worker sent an event for no task", "worker", run.cand.id, "batch", run.batch.ID, "index", ev.Index)
		return
	}
	a := run.atts[ev.Index]
	now := s.clock.Now()
	alpha := s.cfg.EWMAAlpha
	s.mu.Lock()
	if a.ended {
		s.mu.Unlock()
		return
	}
	c := a.cand
	// Embedding calls merge a frame's inputs, so only generation teaches
	// the latency model. A task that is not streamed sends its text in one
	// delta at the end (see task.Task.Stream): its first event is not its
	// first token, so it teaches the model only at its end (below).
	learn := a.call.task.Kind != task.KindEmbedding && !task.EndedEarly(ev.FinishReason)
	streamed := a.call.task.Stream
	if a.firstAt.IsZero() && ev.Type != task.EventFailed {
		a.firstAt = now
		if learn && streamed {
			c.latency.observeTTFT(alpha, a.promptTokens(ev), time.Duration(float64(now.Sub(a.sentAt))/a.lf))
		}
		s.releasePromptLocked(a)
	}
	var release bool
	switch ev.Type {
	case task.EventDelta:
		n := max(ev.Tokens, 0)
		a.tokens += n
		d := min(n, a.remaining)
		a.remaining -= d
		c.assignedTokens -= d
	case task.EventDone:
		switch n := a.tokens; {
		case !learn:
		case streamed && n > 1:
			c.latency.observeITL(alpha, time.Duration(float64(now.Sub(a.firstAt))/float64(n-1)/a.lf))
		case !streamed:
			// Whole time = TTFT + (n−1) × ITL: with the current ITL
			// estimate, what is left is this task's time to first token.
			total := float64(now.Sub(a.sentAt)) / a.lf
			ttft := total - float64(max(n-1, 0))*c.latency.interToken*float64(time.Second)
			c.latency.observeTTFT(alpha, a.promptTokens(ev), time.Duration(max(ttft, total/float64(max(n, 1)))))
		}
		c.failures = 0
		c.served++
		s.endAttemptLocked(a)
		release = true
	case task.EventFailed:
		// A task we cancelled may end any way it likes; only failures of
		// live tasks count against the worker.
		if !a.cancelled && (ev.Error == nil || workerFault(ev.Error.Status)) {
			s.ejectLocked(c, now, "task failed on the worker")
		}
		s.endAttemptLocked(a)
		release = true
	}
	s.mu.Unlock()
	if release {
		c.batcher.Release(&a.entry)
	}
	a.call.attemptEvent(a, ev)
}

// promptTokens is the prompt's size as the worker counted it when the event
// says, else the gateway's estimate.
func (a *attempt) promptTokens(ev task.Event) int {
	if ev.Usage != nil && ev.Usage.PromptTokens > 0 {
		return ev.Usage.PromptTokens
	}
	return a.call.promptTokens
}

// releasePromptLocked stops counting the prompt in the worker's
// outstanding tokens once prefill is over.
func (s *Scheduler) releasePromptLocked(a *attempt) {
	d := min(a.call.promptTokens, a.remaining)
	a.remaining -= d
	a.cand.assignedTokens -= d
}

// workerFault reports whether a task failure with this status counts
// against the worker (not the client's own error or cancellation).
func workerFault(status int) bool {
	return status >= 500 && status != http.StatusGatewayTimeout
}

// retryable reports whether a task failure with this status may go to
// another worker when nothing was delivered yet.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || workerFault(status)
}

// runEnded is called once when a batch's stream ends.
func (s *Scheduler) runEnded(run *batchRun, err error) {
	c := run.cand
	now := s.clock.Now()
	var orphans []*attempt
	s.mu.Lock()
	for _, a := range run.atts {
		if !a.ended {
			orphans = append(orphans, a)
		}
	}
	// A completion record the gateway refused (workers.RecordPolicy) is
	// the worker's lie or fault: it is ejected for it, the reason logged
	// and counted, and the task it concerned fails with the link's 502
	// (never retried: its worker already generated it).
	var refused *workers.RecordError
	isRefusal := errors.As(err, &refused)
	if err != nil || len(orphans) > 0 {
		switch {
		case isRefusal:
			s.stats.recordsRefused++
			s.ejectLocked(c, now, "completion record refused: "+refused.Error())
		case !errors.Is(err, context.Canceled):
			s.ejectLocked(c, now, "worker link failed")
		}
	}
	s.mu.Unlock()
	if isRefusal {
		s.metrics.RecordRecordRefused(context.Background(), refused.Check)
	}
	if len(orphans) == 0 {
		return
	}
	if err == nil {
		err = errors.New("stream ended before every task did")
	}
	linkErr := apierr.Unavailable(workers.CodeWorkerUnavailable, "the worker failed; retry", err)
	s.logger.Warn("worker link failed", "worker", c.id, "batch", run.batch.ID, "tasks", len(orphans), "err", err)
	for _, a := range orphans {
		s.mu.Lock()
		noEvent := a.firstAt.IsZero()
		s.mu.Unlock()
		if isRefusal && a.index == refused.Index {
			s.attemptFailed(a, apierr.From(err), false)
			continue
		}
		s.attemptFailed(a, linkErr, noEvent)
	}
}

// attemptFailed ends an attempt that failed without a final event; the call
// retries elsewhere when it may.
func (s *Scheduler) attemptFailed(a *attempt, err error, retry bool) {
	s.mu.Lock()
	if a.ended {
		s.mu.Unlock()
		return
	}
	sent := a.run != nil
	s.endAttemptLocked(a)
	s.mu.Unlock()
	if sent {
		a.cand.batcher.Release(&a.entry)
	}
	a.call.attemptFailed(a, err, retry)
}

// expired is the batcher's Expire: the deadline passed in the queue.
func (s *Scheduler) expired(a *attempt) {
	s.mu.Lock()
	s.endAttemptLocked(a)
	s.stats.expired++
	s.mu.Unlock()
	a.call.end(a, apierr.Timeout(CodeDeadlineExceeded, "the request's deadline passed while it waited for a worker", nil))
}

func (s *Scheduler) endAttemptLocked(a *attempt) {
	if a.ended {
		return
	}
	a.ended = true
	a.queued.End() // no-op once its frame was sent
	a.cand.assigned--
	a.cand.assignedTokens -= a.remaining
	a.remaining = 0
}

// ejectLocked takes a failing worker out of rotation for an exponential
// back-off: EjectBase × 2^(consecutive failures − 1), at most EjectMax.
func (s *Scheduler) ejectLocked(c *Candidate, now time.Time, why string) {
	c.failures++
	c.failed++
	d := s.cfg.EjectBase << min(c.failures-1, 30)
	if d > s.cfg.EjectMax || d <= 0 {
		d = s.cfg.EjectMax
	}
	c.setEjected(now.Add(d))
	s.stats.ejections++
	s.logger.Warn("worker ejected", "worker", c.id, "reason", why, "for", d, "failures", c.failures)
}

// What abort did with an attempt.
type abortResult int

const (
	abortDropped abortResult = iota // it never reached its worker (or there was none)
	abortRunning                    // it is (or is about to be) on its worker, asked to stop
	abortEnded                      // its last event is in, on its way to its call
)

// abort stops attempt a: out of the queue if still there, else cancelled on
// the worker (whose last event then ends the attempt).
func (s *Scheduler) abort(a *attempt) abortResult {
	if a == nil {
		return abortDropped
	}
	if a.cand.batcher.Cancel(&a.entry) {
		s.mu.Lock()
		s.endAttemptLocked(a)
		s.mu.Unlock()
		return abortDropped
	}
	s.mu.Lock()
	run, ended := a.run, a.ended
	a.cancelled = true
	s.mu.Unlock()
	if ended {
		return abortEnded
	}
	if run == nil {
		return abortRunning // being sent: its frame will carry it
	}
	conn, id, index := a.cand.conn, run.batch.ID, a.index
	if _, ok := conn.(StartConn); ok {
		_ = conn.Cancel(context.Background(), id, index)
		return abortRunning
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := conn.Cancel(ctx, id, index); err != nil {
			s.logger.Debug("cancel on worker failed", "worker", a.cand.id, "request_id", a.call.task.RequestID, "err", err)
		}
	}()
	return abortRunning
}
