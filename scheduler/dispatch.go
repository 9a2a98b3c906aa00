package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
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

// timingSample is how often a cycle is timed step by step: reading the
// clock costs about as much as a step, so 1 cycle in timingSample is.
const timingSample = 16

// cycleLocked runs filters → scorers → picker and admission for req.
func (s *Scheduler) cycleLocked(req *Request) (*Candidate, error) {
	s.stats.cycles++
	timed := s.stats.cycles%timingSample == 1
	var start, t time.Time // decision latency is CPU time, not scheduling time
	if timed {
		start = time.Now()
	}
	step := func(i int) {
		if timed {
			now := time.Now()
			s.stats.steps[i].ObserveDuration(now.Sub(t))
			t = now
		}
	}
	t = start
	req.Now = s.clock.Now()
	req.nowNs = monoNanos(req.Now)
	sc := &s.scratch
	cands := append(sc.cands[:0], s.order...)
	for i, f := range s.filters {
		cands = f.Filter(req, cands)
		step(i)
		if len(cands) == 0 {
			sc.cands = cands
			s.stats.refused[i]++
			return nil, s.emptyError(i, req)
		}
	}
	sc.cands = cands
	n := len(cands)
	s.stats.candidates.Observe(float64(n))
	s.metrics.RecordCandidates(context.Background(), n)
	if cap(sc.pred) < n {
		sc.pred = make([]float64, n)
		sc.scores = make([]float64, n)
		sc.totals = make([]float64, n)
	}
	pred, scores, totals := sc.pred[:n], sc.scores[:n], sc.totals[:n]
	best := 0.0
	for i, c := range cands {
		pred[i] = predictTTFT(c, req.PromptTokens)
		if i == 0 || pred[i] < best {
			best = pred[i]
		}
		totals[i] = 0
	}
	req.predTTFT = pred
	for j, sc := range s.scorers {
		sc.Score(req, cands, scores)
		for i := range totals {
			totals[i] += s.weights[j] * clamp01(scores[i])
		}
		step(len(s.filters) + j)
	}
	pick := s.picker.Pick(req, cands, totals)
	step(len(s.stats.steps) - 1)
	req.predTTFT = nil
	observe := func() {
		if timed {
			d := time.Since(start)
			s.stats.decisions.ObserveDuration(d)
			s.metrics.RecordDecision(context.Background(), d)
		}
	}

	if !req.Task.Deadline.IsZero() && !req.Now.Before(req.Task.Deadline) {
		s.stats.expired++
		return nil, apierr.Timeout(CodeDeadlineExceeded, "the request's deadline passed before it could start", nil)
	}
	if s.shed && !req.Task.Deadline.IsZero() {
		slack := req.Task.Deadline.Sub(req.Now).Seconds()
		if best > slack && req.Task.Priority == task.PriorityInteractive && !mayExceedContext(req, cands) {
			s.stats.shed++
			observe()
			retry := time.Duration(max(best-slack, 1) * float64(time.Second))
			return nil, apierr.RateLimited(CodeDeadlineUnmeetable,
				fmt.Sprintf("no worker can start this request within its deadline (predicted %.0f ms, %.0f ms left); retry later", best*1e3, slack*1e3), retry)
		}
	}
	s.stats.placed++
	observe()
	return cands[pick], nil
}

func (s *Scheduler) emptyError(filter int, req *Request) error {
	switch s.filters[filter].(type) {
	case *ModelFilter:
		if req.Task.Kind == task.KindEmbedding {
			return apierr.NotFound("model", CodeModelNotFound, "no worker serves embeddings with the model %q", req.Task.Model)
		}
		return apierr.NotFound("model", CodeModelNotFound, "the model %q does not exist or no worker serves it", req.Task.Model)
	case *CapacityFilter:
		return apierr.RateLimited(CodeOverloaded, "every worker serving this model is at capacity; retry later", time.Second)
	}
	return apierr.Unavailable(CodeNoHealthyWorker, "no healthy worker serves this model right now; retry later", nil)
}

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

// estimatePromptTokens is the gateway's hint, or about four bytes a token.
func estimatePromptTokens(t *task.Task) int {
	if t.PromptTokensHint > 0 {
		return t.PromptTokensHint
	}
	n := len(t.Prompt)
	for _, m := range t.Messages {
		n += len(m.Content) + 4
	}
	for _, in := range t.Inputs {
		n += len(in)
	}
	return max(n/4, 1)
}

func (s *Scheduler) estimateOutputTokens(t *task.Task) int {
	switch {
	case t.Kind == task.KindEmbedding:
		return 0
	case t.MaxTokens > 0:
		return min(t.MaxTokens, s.cfg.ExpectedOutputTokens*4)
	}
	return s.cfg.ExpectedOutputTokens
}

// affinityKey hashes the model and the start of the prompt (the first
// messages of a chat), so conversations and shared system prompts meet
// the same engine prefix cache.
func (s *Scheduler) affinityKey(t *task.Task) uint64 {
	if t.Kind == task.KindEmbedding {
		return 0
	}
	h := newFNV()
	h.writeString(t.Model)
	left := s.cfg.AffinityPrefix
	write := func(str string) {
		if left <= 0 {
			return
		}
		if len(str) > left {
			str = str[:left]
		}
		h.writeString(str)
		h.writeString("\x00")
		left -= len(str)
	}
	write(t.Prompt)
	for _, m := range t.Messages {
		write(m.Role)
		write(m.Content)
	}
	return mix64(uint64(h)) | 1 // never 0, which means no key
}
