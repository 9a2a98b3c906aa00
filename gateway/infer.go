package gateway

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/valyala/fasthttp"
)

// inference is one OpenAI request on its way through the scheduler. It holds
// copies of everything the response needs, so stream writers never touch the
// (recycled) RequestCtx.
type inference struct {
	reqID        string
	receiptID    string // "" when receipts are off
	respID       string
	created      int64
	task         *task.Task
	stream       bool
	includeUsage bool
	format       string        // embeddings encoding_format
	key          *APIKey       // whose limits, deadline and token budget apply
	budget       time.Duration // how far off the task's deadline was set (requestDeadline)
	text         string        // the whole response text, for the auditor (hasText)
	hasText      bool
	// answer renders a Responses API answer (responses.go); nil: the
	// chat, completions or embeddings rendering.
	answer *responsesAnswer
}

func (s *Server) chat(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	return s.infer(rc, reqID, req, task.KindChat, "chatcmpl-", obs.OpChat)
}

func (s *Server) completions(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	return s.infer(rc, reqID, req, task.KindCompletion, "cmpl-", obs.OpTextCompletion)
}

func (s *Server) embeddings(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	return s.infer(rc, reqID, req, task.KindEmbedding, "emb-", obs.OpEmbeddings)
}

// infer authenticates, decodes the body (parseRequest, the one path from an
// OpenAI body to a task) and runs it.
func (s *Server) infer(rc *fasthttp.RequestCtx, reqID string, req *obs.Request, kind task.Kind, respPrefix, op string) error {
	key, err := s.authenticate(rc)
	if err != nil {
		return err
	}
	body, err := s.requestBody(rc) // after the key: no inflating for strangers
	if err != nil {
		return err
	}
	p, err := parseRequest(kind, body, s.cfg.Limits, s.taskRequestID(rc, reqID), key.ID)
	if err != nil {
		return err
	}
	if err := s.checkCapabilities(p.task); err != nil {
		return err
	}
	inf := s.newInference(key, p.task, respPrefix)
	req.SetOperation(op, inf.task.Model, inf.reqID)
	inf.stream, inf.includeUsage, inf.format = p.stream, p.includeUsage, p.format
	return s.run(rc, inf, req)
}

// taskRequestID is the request ID a task, its record and its receipt
// carry: unique per request, because records are keyed by it — a worker
// keeps one record per request ID to countersign (a second replaces the
// first, two in one batch make it refuse the batch), and billing counts
// each request ID once. A client's own X-Request-Id (echoed in the
// response) is kept as its prefix, so the client still finds its
// receipt by it: "order-42" becomes "order-42.req_…".
func (s *Server) taskRequestID(rc *fasthttp.RequestCtx, reqID string) string {
	if string(rc.Request.Header.Peek(HeaderRequestID)) != reqID {
		return reqID // the gateway's own
	}
	return reqID + "." + ids.Request()
}

func (s *Server) newInference(key *APIKey, t *task.Task, respPrefix string) *inference {
	now := s.clock.Now()
	inf := &inference{reqID: t.RequestID, respID: ids.New(respPrefix), created: now.Unix(), task: t, key: key}
	if s.deps.Ledger != nil {
		inf.receiptID = ids.Receipt()
	}
	t.Priority = key.Priority
	return inf
}

// run gives the task its deadline and its own context (the RequestCtx is
// not one to hold on to), carrying the request's span so the dispatch, the
// worker link and the ledger write join its trace, then answers as JSON
// or as an SSE stream. req stays the handler's (it never escapes, so an
// unobserved request costs nothing); a stream takes a copy over.
func (s *Server) run(rc *fasthttp.RequestCtx, inf *inference, req *obs.Request) error {
	d, err := requestDeadline(rc, inf.key, s.cfg.DefaultDeadline)
	if err != nil {
		return err
	}
	if err := s.admit(context.Background(), inf.key, inf.reqID, &rc.Response.Header); err != nil {
		return err
	}
	inf.task.Deadline, inf.budget = s.clock.Now().Add(d), d
	// The request's context ends at its deadline, or with errClientClosed
	// when its client goes away (watchClient; a failed stream write).
	base, cancelCause := context.WithCancelCause(context.Background())
	ctx, cancelTimer := context.WithTimeout(base, d)
	cancel := func(cause error) { cancelCause(cause); cancelTimer() }
	if s.deps.Obs != nil {
		ctx = req.Context(obs.WithRequestID(ctx, inf.reqID))
	}
	if inf.stream {
		return s.stream(ctx, cancel, rc, inf, req)
	}
	defer cancel(nil)
	stopWatch := watchClient(rc.Conn(), func() { cancel(errClientClosed) })
	defer stopWatch()
	return s.unary(ctx, rc, inf, req)
}

// errClientClosed ends a request whose client went away (nginx's 499,
// "client closed request"). Its work is stopped and what it generated is
// recorded (docs/billing.md); nobody reads the response.
var errClientClosed = &apierr.Error{Status: workers.StatusClientClosed, Type: apierr.TypeInvalidRequest, Code: "client_closed",
	Message: "the client closed the connection before the answer was complete"}

// result collects a task's events for a JSON answer.
type result struct {
	firstText time.Time // when the first text arrived
	text      strings.Builder
	done      *task.Event
	failed    *task.EventError
	// rich collects the choices and tool calls of a chat task with tools,
	// several choices or logprobs (lp, per choice, when asked).
	rich *task.Output
	lp   []openai.Logprobs
}

// newResult prepares a result for t.
func newResult(t *task.Task) result {
	var r result
	if t.Kind == task.KindChat && (t.RichOutput() || t.Logprobs) {
		r.rich = task.NewOutput(t.Choices())
		if t.Logprobs {
			r.lp = make([]openai.Logprobs, t.Choices())
		}
	}
	return r
}

func (r *result) add(ev task.Event) {
	switch ev.Type {
	case task.EventDelta:
		if r.rich != nil {
			// The link checked the pieces (task.Output) already.
			if r.rich.Add(ev.Choice, ev.Text, ev.ToolCalls) == nil && r.lp != nil && ev.Logprobs != nil {
				r.lp[ev.Choice].Add(ev.Logprobs)
			}
		}
		r.text.WriteString(ev.Text)
	case task.EventDone:
		r.done = &ev
	case task.EventFailed:
		r.failed = ev.Error
	}
}

func (r *result) err() error {
	switch {
	case r.failed != nil:
		return eventAPIError(r.failed)
	case r.done == nil:
		return apierr.Internal(errors.New("dispatch ended without a done event"))
	}
	return nil
}

func eventAPIError(e *task.EventError) error {
	if e == nil {
		return apierr.Internal(errors.New("failed event without an error"))
	}
	return e.APIError()
}

// unary answers with one JSON body. A request that ends before its answer
// (client gone, deadline) still has its worker's record of the tokens
// generated until then when there is one: it is recorded and billed, and
// the error response names its receipt (docs/billing.md).
func (s *Server) unary(ctx context.Context, rc *fasthttp.RequestCtx, inf *inference, req *obs.Request) error {
	res := newResult(inf.task)
	err := s.deps.Dispatcher.Dispatch(ctx, inf.task, func(ev task.Event) error {
		if ev.Type == task.EventDelta && (ev.Text != "" || len(ev.ToolCalls) > 0) && res.firstText.IsZero() {
			res.firstText = s.clock.Now()
		}
		if inf.answer != nil && ev.Type == task.EventDelta {
			inf.answer.build.Delta(ev.Text, ev.ToolCalls)
		}
		res.add(ev)
		return nil
	})
	if !res.firstText.IsZero() {
		req.FirstToken(res.firstText)
	}
	if res.done != nil && task.EndedEarly(res.done.FinishReason) {
		return s.unaryEndedEarly(ctx, rc, inf, req, res.done, err)
	}
	if res.done == nil {
		// No record: nothing billable was served.
		if err != nil {
			return err
		}
		return res.err()
	}
	// A whole answer, even if the request ended as it came: its client,
	// if still there, gets it.
	if inf.task.Kind == task.KindEmbedding && len(res.done.Embeddings) != len(inf.task.Inputs) {
		return apierr.Internal(errors.New("worker returned the wrong number of embeddings"))
	}
	req.SetUsage(res.done.Usage.PromptTokens, res.done.Usage.CompletionTokens)
	s.charge(ctx, inf.key, inf.reqID, res.done.Usage)
	if err := s.record(ctx, inf, res.done); err != nil {
		return err
	}
	inf.text, inf.hasText = res.text.String(), inf.task.Kind != task.KindEmbedding
	s.observeAudit(inf, res.done)
	if inf.receiptID != "" {
		rc.Response.Header.Set(HeaderReceipt, inf.receiptID)
	}
	s.logDone(ctx, inf, res.done)
	if inf.answer != nil {
		return inf.answer.unary(ctx, rc, res.done)
	}
	usage := openai.NewUsage(res.done.Usage)
	switch inf.task.Kind {
	case task.KindChat:
		if res.rich != nil {
			return writeJSON(rc, openai.NewRichChatCompletion(inf.respID, inf.created, inf.task.Model, res.rich, res.lp, finishReason(res.done), usage))
		}
		// Rendered by hand (the common answer; encoding/json for the rest).
		text := res.text.String()
		body := make([]byte, 0, 320+len(text)+len(inf.task.Model)+len(inf.respID))
		rc.SetContentType("application/json")
		rc.SetStatusCode(fasthttp.StatusOK)
		rc.Response.SetBodyRaw(openai.AppendChatCompletion(body, inf.respID, inf.created, inf.task.Model,
			text, finishReason(res.done), usage))
		return nil
	case task.KindCompletion:
		return writeJSON(rc, &openai.TextCompletion{
			ID: inf.respID, Object: "text_completion", Created: inf.created, Model: inf.task.Model,
			Choices: []openai.CompletionChoice{{Text: res.text.String(), FinishReason: openai.Ptr(finishReason(res.done))}},
			Usage:   &usage,
		})
	default:
		return writeJSON(rc, openai.NewEmbeddingList(inf.task.Model, inf.format, res.done.Embeddings, usage.PromptTokens))
	}
}

// unaryEndedEarly answers an unstreamed request whose generation was
// stopped part way: a stopped one (client gone, deadline) is billed for
// the tokens generated, and its error response names the receipt; one
// that failed is not billed (its client received nothing).
func (s *Server) unaryEndedEarly(ctx context.Context, rc *fasthttp.RequestCtx, inf *inference, req *obs.Request, done *task.Event, err error) error {
	if err == nil {
		err = eventAPIError(done.Error)
	}
	if done.FinishReason != task.FinishCancelled {
		return err
	}
	if !s.stoppedByGateway(ctx, inf.task) {
		// The worker stopped on its own and calls it cancelled, while the
		// client still waits for its answer: that is the worker failing,
		// and a client that receives nothing is billed nothing.
		return &apierr.Error{Status: fasthttp.StatusBadGateway, Type: apierr.TypeServer, Code: "worker_stopped",
			Message: "the worker stopped the generation before its end", Cause: err}
	}
	req.SetUsage(done.Usage.PromptTokens, done.Usage.CompletionTokens)
	s.charge(ctx, inf.key, inf.reqID, done.Usage)
	if rerr := s.record(ctx, inf, done); rerr != nil {
		return rerr
	}
	if inf.receiptID != "" {
		rc.Response.Header.Set(HeaderReceipt, inf.receiptID) // kept on the error response (writeError)
	}
	s.logDone(ctx, inf, done)
	return err
}

// deadlineSkew is how far before a task's deadline (by the gateway's
// clock) a worker may stop it for that deadline: the worker stops at
// Task.Deadline by its own clock, a moment before the request's context
// ends here.
const deadlineSkew = time.Second

// stoppedByGateway reports whether a task whose record says cancelled was
// stopped by the gateway: its request ended (client gone, deadline), or
// its deadline is all but reached.
func (s *Server) stoppedByGateway(ctx context.Context, t *task.Task) bool {
	return ctx.Err() != nil || !t.Deadline.IsZero() && !s.clock.Now().Before(t.Deadline.Add(-deadlineSkew))
}

// finishReason is the OpenAI finish reason of a finished generation.
func finishReason(done *task.Event) string {
	if done.FinishReason == "" {
		return "stop"
	}
	return done.FinishReason
}

// record makes the completion a receipt before the client sees the end of
// the response. It is not cut short by a client that has gone: the work was
// done and is billable.
func (s *Server) record(ctx context.Context, inf *inference, done *task.Event) error {
	if s.deps.Ledger == nil {
		return nil
	}
	if done.Completion == nil {
		return apierr.Internal(errors.New("worker sent no completion record"))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.deps.Ledger.Record(ctx, inf.receiptID, done.Completion); err != nil {
		return apierr.Internal(err)
	}
	return nil
}

// recordVoid makes the receipt ID a client already holds (a stream's
// headers) resolve to a void receipt: nothing billable was served, and
// why. Like record, it is not cut short by a client that has gone.
func (s *Server) recordVoid(ctx context.Context, inf *inference, why error) {
	if s.deps.Ledger == nil || inf.receiptID == "" {
		return
	}
	reason := "nothing billable was served"
	if ae := apierr.From(why); ae != nil && ae.Message != "" {
		reason += ": " + ae.Message
	}
	d := inf.task.Digest()
	v := &task.Void{RequestID: inf.reqID, RequestDigest: hex.EncodeToString(d[:]), Subject: inf.task.Subject,
		Model: inf.task.Model, Time: s.clock.Now().UTC(), Reason: reason}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.deps.Ledger.RecordVoid(ctx, inf.receiptID, v); err != nil {
		s.log.ErrorContext(ctx, "void receipt not recorded: the ID the client holds will not resolve", "request_id", inf.reqID,
			"receipt", inf.receiptID, "err", err)
		return
	}
	s.log.InfoContext(ctx, "receipt void", "request_id", inf.reqID, "receipt", inf.receiptID, "reason", reason)
}

func (s *Server) logDone(ctx context.Context, inf *inference, done *task.Event) {
	u := openai.NewUsage(done.Usage)
	s.log.InfoContext(ctx, "request done", "request_id", inf.reqID, "model", inf.task.Model, "kind", inf.task.Kind,
		"stream", inf.stream, "prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens,
		"finish_reason", done.FinishReason, "receipt", inf.receiptID)
}

// dispatchEnd is how a stream's dispatch ended: its error, and its last
// event when that was a done event the writer did not take (the request
// had ended: client gone, deadline) — the record of what was generated,
// still to be recorded.
type dispatchEnd struct {
	err  error
	kept *task.Event
}

// stream answers with SSE. It opens the dispatch first and waits for the
// first event, so an error before any output still gets its real status;
// only then does it commit to a 200 — handing the client its receipt ID —
// and hand the rest to a body stream writer. From then on the ID always
// resolves: to the worker's record (complete, or of the tokens generated
// when the stream ended early) or to a void receipt. A failed write means
// the client is gone: cancel stops the task and the scheduler delivers the
// worker's last event, which the writer then records.
func (s *Server) stream(ctx context.Context, cancel func(error), rc *fasthttp.RequestCtx, inf *inference, req *obs.Request) error {
	events := make(chan task.Event) // unbuffered: Dispatch cannot return before its events are taken
	done := make(chan dispatchEnd, 1)
	go func() {
		var kept *task.Event
		err := s.deps.Dispatcher.Dispatch(ctx, inf.task, func(ev task.Event) error {
			select {
			case events <- ev:
			case <-ctx.Done():
				// Nobody reads any more; keep the record, drop the text
				// (the client is gone, or gets the deadline's error).
				if ev.Type == task.EventDone {
					kept = &ev
				}
			}
			return nil // never stop Dispatch: its last event is the record
		})
		done <- dispatchEnd{err: err, kept: kept}
	}()

	stopWatch := watchClient(rc.Conn(), func() { cancel(errClientClosed) })
	var first task.Event
	select {
	case first = <-events:
		stopWatch()
	case end := <-done:
		stopWatch()
		cancel(nil)
		// No byte went out, no ID was handed out. A record of tokens
		// generated before the client left is still billable.
		if end.kept != nil {
			s.recordEnded(ctx, inf, end.kept)
		}
		if end.err == nil {
			end.err = apierr.Internal(errors.New("dispatch ended without events"))
		}
		return end.err
	}
	if first.Type == task.EventFailed {
		cancel(nil)
		<-done
		return eventAPIError(first.Error)
	}

	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetContentType("text/event-stream; charset=utf-8")
	rc.Response.Header.Set("Cache-Control", "no-cache")
	rc.Response.Header.Set("X-Accel-Buffering", "no")
	if inf.receiptID != "" {
		rc.Response.Header.Set(HeaderReceipt, inf.receiptID)
	}
	// The stream writer outlives the handler: it takes the request's
	// observation over and ends it after the last byte.
	sw := &sseWriter{s: s, inf: inf, obs: req.Detach()}
	// While the writer runs (on fasthttp's stream goroutine) the
	// connection's own goroutine only copies its output to the client and
	// reads nothing, and it reads the next request only after the writer
	// has returned: the connection (not the recycled RequestCtx) can be
	// watched meanwhile, so a client that leaves between tokens stops its
	// work at once rather than at the next write.
	conn := rc.Conn()
	s.streamBody(rc, func(w *bufio.Writer) {
		defer cancel(nil)
		stopWatch := watchClient(conn, func() { cancel(errClientClosed) })
		defer stopWatch()
		sw.w = w
		err := sw.run(ctx, first, events, done)
		if !sw.settled {
			// The client went away (a write failed) before the end: stop
			// the task and settle its receipt with what the worker
			// reports (Dispatch returns within the scheduler's grace).
			cancel(errClientClosed)
			sw.settle(ctx, <-done)
		}
		if err != nil {
			s.log.InfoContext(ctx, "stream ended early", "request_id", inf.reqID, "model", inf.task.Model, "err", err)
		}
		sw.obs.EndErr(err, s.clock.Now()) // headers said 200; the code still tells what failed
	})
	return nil
}

// streamBody sends a body written as it goes: chunked to an HTTP/1.1
// client; to an HTTP/1.0 client, which has no chunked coding, as the bare
// bytes, with neither Content-Length nor Transfer-Encoding, ended by
// closing the connection (RFC 9112 §6.3). fasthttp frames every body
// stream as chunks, so that response is written on the hijacked
// connection. body always runs, even when the header cannot be written:
// it settles the request (a failed flush is a client gone). fasthttp's
// Shutdown does not wait for a hijacked connection, so Shutdown waits for
// these itself (s.hijacked).
func (s *Server) streamBody(rc *fasthttp.RequestCtx, body func(*bufio.Writer)) {
	if rc.Request.Header.IsHTTP11() {
		rc.SetBodyStreamWriter(body)
		return
	}
	var h fasthttp.ResponseHeader
	rc.Response.Header.CopyTo(&h)
	h.Del(fasthttp.HeaderTransferEncoding)
	h.SetContentLength(-2) // neither length nor chunks: Connection: close
	h.SetConnectionClose()
	rc.HijackSetNoResponse(true)
	s.hijacked.Add(1)
	rc.Hijack(func(c net.Conn) {
		defer s.hijacked.Done()
		w := bufio.NewWriterSize(c, 4096)
		if h.Write(w) == nil {
			_ = w.Flush()
		}
		body(w)
		_ = w.Flush()
	})
}

// recordEnded records the last done event of a request that ended before
// its client took it; a failure is logged (nobody is left to tell).
func (s *Server) recordEnded(ctx context.Context, inf *inference, done *task.Event) {
	if done.Usage != nil {
		s.charge(ctx, inf.key, inf.reqID, done.Usage)
	}
	if err := s.record(ctx, inf, done); err != nil {
		s.log.ErrorContext(ctx, "record of an ended request not written", "request_id", inf.reqID, "err", err)
		return
	}
	s.logDone(ctx, inf, done)
}

// sseWriter writes one stream's chunks. Chunks are buffered and flushed
// whenever no further event is ready, so a client gets each token as soon
// as it exists, and tokens that arrive together go out in one write.
type sseWriter struct {
	s   *Server
	w   *bufio.Writer
	inf *inference
	obs obs.Request // only this writer's goroutine touches it
	buf []byte      // scratch for hand-rendered chunks
	// settled: the receipt ID the headers named has been recorded (the
	// worker's record) or voided.
	settled bool
	// calls counts the tool calls started per choice (for each choice's
	// finish reason).
	calls []int
}

// called counts the tool calls ev starts.
func (sw *sseWriter) called(ev task.Event) {
	if sw.calls == nil {
		sw.calls = make([]int, sw.inf.task.Choices())
	}
	for _, d := range ev.ToolCalls {
		if d.ID != "" && ev.Choice >= 0 && ev.Choice < len(sw.calls) {
			sw.calls[ev.Choice]++
		}
	}
}

// settle makes the stream's receipt resolve once its dispatch has ended
// without the writer taking a done event: to the kept record of what was
// generated, or, with none, to a void receipt.
func (sw *sseWriter) settle(ctx context.Context, end dispatchEnd) {
	sw.settled = true
	if end.kept != nil {
		sw.s.recordEnded(ctx, sw.inf, end.kept)
		return
	}
	why := end.err
	if why == nil {
		why = apierr.Internal(errors.New("dispatch ended without a done event"))
	}
	sw.s.recordVoid(ctx, sw.inf, why)
}

var errClientGone = errors.New("client disconnected")

func (sw *sseWriter) run(ctx context.Context, first task.Event, events <-chan task.Event, done <-chan dispatchEnd) error {
	if a := sw.inf.answer; a != nil {
		if err := sw.events(a.build.Start()); err != nil {
			return err
		}
	} else if sw.inf.task.Kind == task.KindChat {
		// Every choice opens with the assistant role, as OpenAI streams
		// them (SDK accumulators refuse a choice that never carried one).
		for i := range sw.inf.task.Choices() {
			c := sw.chatChunk(openai.ChatDelta{Role: "assistant", Content: openai.Ptr("")}, nil)
			c.Choices[0].Index = i
			if err := sw.data(c); err != nil {
				return err
			}
		}
	}
	finished, err := sw.event(ctx, first)
	if finished || err != nil {
		return err
	}
	idle := make(chan struct{}, 1)
	for {
		// Take whatever is already waiting before paying for a flush.
		select {
		case ev := <-events:
			finished, err := sw.event(ctx, ev)
			if finished || err != nil {
				return err
			}
			continue
		default:
		}
		if err := sw.flush(); err != nil {
			return err
		}
		t := sw.s.clock.AfterFunc(sw.s.cfg.KeepAlive, func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		})
		select {
		case ev := <-events:
			t.Stop()
			finished, err := sw.event(ctx, ev)
			if finished || err != nil {
				return err
			}
		case end := <-done:
			t.Stop()
			if end.kept != nil {
				// The request ended (its deadline) as its record came.
				_, err := sw.event(ctx, *end.kept)
				return err
			}
			sw.settle(ctx, end)
			derr := end.err
			if derr == nil {
				derr = apierr.Internal(errors.New("dispatch ended without a done event"))
			}
			return sw.fail(ctx, derr)
		case <-idle:
			if _, err := sw.w.WriteString(": keepalive\n\n"); err != nil {
				return errClientGone
			}
		}
	}
}

// checkCapabilities refuses, before admission, a task whose model no
// registered worker serves with the capabilities it needs (400
// unsupported_parameter naming the field), when the dispatcher can tell.
func (s *Server) checkCapabilities(t *task.Task) error {
	if cc, ok := s.deps.Dispatcher.(CapabilityChecker); ok {
		return cc.CheckCapabilities(t)
	}
	return nil
}

// event writes one event; finished is true after the last write.
func (sw *sseWriter) event(ctx context.Context, ev task.Event) (finished bool, err error) {
	inf := sw.inf
	switch ev.Type {
	case task.EventDelta:
		if inf.answer != nil && (ev.Text != "" || len(ev.ToolCalls) > 0) {
			sw.obs.FirstToken(sw.s.clock.Now())
			return false, sw.events(inf.answer.build.Delta(ev.Text, ev.ToolCalls))
		}
		if inf.answer == nil && (len(ev.ToolCalls) > 0 || ev.Logprobs != nil || ev.Choice != 0) {
			sw.obs.FirstToken(sw.s.clock.Now())
			sw.called(ev)
			d := openai.ChatDelta{ToolCalls: openai.NewChunkToolCalls(ev.ToolCalls)}
			if ev.Text != "" {
				// A copy: &ev.Text would move every event of every stream
				// to the heap, rich or not.
				text := ev.Text
				d.Content = &text
			}
			c := sw.chatChunk(d, nil)
			c.Choices[0].Index, c.Choices[0].Logprobs = ev.Choice, ev.Logprobs
			return false, sw.data(c)
		}
		if ev.Text == "" {
			return false, nil
		}
		sw.obs.FirstToken(sw.s.clock.Now())
		if inf.task.Kind == task.KindChat {
			sw.buf = openai.AppendChatContentChunk(sw.buf[:0], inf.respID, inf.created, inf.task.Model, ev.Text)
		} else {
			sw.buf = openai.AppendTextChunk(sw.buf[:0], inf.respID, inf.created, inf.task.Model, ev.Text)
		}
		return false, sw.dataBytes(sw.buf)
	case task.EventFailed:
		sw.settled = true
		sw.s.recordVoid(ctx, inf, eventAPIError(ev.Error))
		return true, sw.fail(ctx, eventAPIError(ev.Error))
	case task.EventDone:
		sw.obs.SetUsage(ev.Usage.PromptTokens, ev.Usage.CompletionTokens)
		sw.s.charge(ctx, inf.key, inf.reqID, ev.Usage)
		sw.settled = true
		if err := sw.s.record(ctx, inf, &ev); err != nil {
			return true, sw.fail(ctx, err)
		}
		if task.EndedEarly(ev.FinishReason) {
			// Billed for the tokens generated; the client learns why
			// the stream stopped, the way OpenAI reports errors.
			sw.s.logDone(ctx, inf, &ev)
			cause := eventAPIError(ev.Error)
			if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				cause = apierr.Timeout("deadline_exceeded", "the request's deadline passed", nil)
			}
			return true, sw.fail(ctx, cause)
		}
		sw.s.observeAudit(inf, &ev)
		if inf.answer != nil {
			err := sw.events(inf.answer.finish(ctx, &ev))
			sw.s.logDone(ctx, inf, &ev)
			if err != nil {
				return true, err
			}
			return true, sw.flush()
		}
		reason := finishReason(&ev)
		if inf.task.Kind == task.KindChat {
			// One finish chunk per choice; one that called tools ends
			// with tool_calls.
			for i := range inf.task.Choices() {
				r := reason
				if inf.task.RichOutput() {
					n := 0
					if sw.calls != nil {
						n = sw.calls[i]
					}
					r = openai.ChoiceFinish(reason, n)
				}
				c := sw.chatChunk(openai.ChatDelta{}, &r)
				c.Choices[0].Index = i
				if err = sw.data(c); err != nil {
					break
				}
			}
		} else {
			err = sw.data(sw.textChunk("", &reason))
		}
		if err != nil {
			return true, err
		}
		if inf.includeUsage {
			u := openai.NewUsage(ev.Usage)
			if inf.task.Kind == task.KindChat {
				c := sw.chatChunk(openai.ChatDelta{}, nil)
				c.Choices, c.Usage = []openai.ChatChunkChoice{}, &u
				err = sw.data(c)
			} else {
				c := sw.textChunk("", nil)
				c.Choices, c.Usage = []openai.CompletionChoice{}, &u
				err = sw.data(c)
			}
			if err != nil {
				return true, err
			}
		}
		sw.s.logDone(ctx, inf, &ev)
		if err := sw.raw("data: [DONE]\n\n"); err != nil {
			return true, err
		}
		return true, sw.flush()
	}
	return false, nil
}

func (sw *sseWriter) chatChunk(d openai.ChatDelta, finish *string) *openai.ChatChunk {
	return &openai.ChatChunk{ID: sw.inf.respID, Object: "chat.completion.chunk", Created: sw.inf.created, Model: sw.inf.task.Model,
		Choices: []openai.ChatChunkChoice{{Delta: d, FinishReason: finish}}}
}

func (sw *sseWriter) textChunk(text string, finish *string) *openai.TextCompletion {
	return &openai.TextCompletion{ID: sw.inf.respID, Object: "text_completion", Created: sw.inf.created, Model: sw.inf.task.Model,
		Choices: []openai.CompletionChoice{{Text: text, FinishReason: finish}}}
}

// fail ends a stream whose headers are out with an error event, the way
// OpenAI reports errors mid-stream.
func (sw *sseWriter) fail(ctx context.Context, err error) error {
	ae := apierr.From(err)
	sw.s.log.WarnContext(ctx, "stream failed", "request_id", sw.inf.reqID, "model", sw.inf.task.Model, "status", ae.Status, "err", err)
	if a := sw.inf.answer; a != nil {
		if werr := sw.events(a.build.Fail(ae)); werr != nil {
			return werr
		}
	} else if werr := sw.raw("data: " + string(openai.MarshalError(ae)) + "\n\n"); werr != nil {
		return werr
	}
	if werr := sw.flush(); werr != nil {
		return werr
	}
	return err
}

func (sw *sseWriter) data(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return sw.dataBytes(b)
}

// dataBytes buffers one "data:" line; bufio reports a broken client only
// when its buffer fills, else at the next flush.
func (sw *sseWriter) dataBytes(b []byte) error {
	sw.w.WriteString("data: ")
	sw.w.Write(b)
	if _, err := sw.w.WriteString("\n\n"); err != nil {
		return errClientGone
	}
	return nil
}

func (sw *sseWriter) raw(s string) error {
	if _, err := sw.w.WriteString(s); err != nil {
		return errClientGone
	}
	return nil
}

func (sw *sseWriter) flush() error {
	if err := sw.w.Flush(); err != nil {
		return errClientGone
	}
	return nil
}

// HeaderDeadline lets a client set its own deadline in milliseconds,
// overriding its key's default.
const HeaderDeadline = "X-Tollgate-Deadline-Ms"

// maxDeadline bounds a client-set deadline.
const maxDeadline = time.Hour

// requestDeadline is how long the request may take: the X-Tollgate-Deadline-Ms
// header when present (1 ms .. 1 h), else the key's default, else the
// gateway's.
func requestDeadline(rc *fasthttp.RequestCtx, key *APIKey, fallback time.Duration) (time.Duration, error) {
	if h := rc.Request.Header.Peek(HeaderDeadline); h != nil {
		ms, err := strconv.ParseInt(string(h), 10, 64)
		if err != nil || ms < 1 || ms > maxDeadline.Milliseconds() {
			return 0, apierr.BadRequest(HeaderDeadline, "invalid_header",
				"Invalid %s header: want a whole number of milliseconds from 1 to %d.", HeaderDeadline, maxDeadline.Milliseconds())
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	if key.Deadline > 0 {
		return key.Deadline, nil
	}
	return fallback, nil
}
