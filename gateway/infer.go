package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/openai"
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
	task         *workers.Task
	stream       bool
	includeUsage bool
	format       string  // embeddings encoding_format
	key          *APIKey // whose limits, deadline and token budget apply
	text         string  // the whole response text, for the auditor (hasText)
	hasText      bool
}

func (s *Server) chat(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	key, err := s.authenticate(rc)
	if err != nil {
		return err
	}
	r, err := openai.ParseChat(rc.PostBody(), s.cfg.Limits)
	if err != nil {
		return err
	}
	inf := s.newInference(key, r.Task(reqID), "chatcmpl-")
	req.SetOperation(obs.OpChat, inf.task.Model, reqID)
	inf.stream, inf.includeUsage = r.Stream, r.IncludeUsage()
	return s.run(rc, inf, req)
}

func (s *Server) completions(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	key, err := s.authenticate(rc)
	if err != nil {
		return err
	}
	r, err := openai.ParseCompletion(rc.PostBody(), s.cfg.Limits)
	if err != nil {
		return err
	}
	inf := s.newInference(key, r.Task(reqID), "cmpl-")
	req.SetOperation(obs.OpTextCompletion, inf.task.Model, reqID)
	inf.stream, inf.includeUsage = r.Stream, r.IncludeUsage()
	return s.run(rc, inf, req)
}

func (s *Server) embeddings(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	key, err := s.authenticate(rc)
	if err != nil {
		return err
	}
	r, err := openai.ParseEmbedding(rc.PostBody(), s.cfg.Limits)
	if err != nil {
		return err
	}
	inf := s.newInference(key, r.Task(reqID), "emb-")
	req.SetOperation(obs.OpEmbeddings, inf.task.Model, reqID)
	inf.format = r.EncodingFormat
	return s.run(rc, inf, req)
}

func (s *Server) newInference(key *APIKey, t *workers.Task, respPrefix string) *inference {
	now := s.clock.Now()
	inf := &inference{reqID: t.RequestID, respID: ids.New(respPrefix), created: now.Unix(), task: t, key: key}
	if s.deps.Ledger != nil {
		inf.receiptID = ids.Receipt()
	}
	t.Subject = key.ID
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
	if err := s.admit(context.Background(), inf.key, inf.reqID); err != nil {
		return err
	}
	inf.task.Deadline = s.clock.Now().Add(d)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	if s.deps.Obs != nil {
		ctx = req.Context(obs.WithRequestID(ctx, inf.reqID))
	}
	if inf.stream {
		return s.stream(ctx, cancel, rc, inf, req)
	}
	defer cancel()
	return s.unary(ctx, rc, inf, req)
}

// result collects a task's events for a JSON answer.
type result struct {
	firstText time.Time // when the first text arrived
	text      strings.Builder
	done      *workers.Event
	failed    *workers.EventError
}

func (r *result) add(ev workers.Event) {
	switch ev.Type {
	case workers.EventDelta:
		r.text.WriteString(ev.Text)
	case workers.EventDone:
		r.done = &ev
	case workers.EventFailed:
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

func eventAPIError(e *workers.EventError) error {
	if e == nil {
		return apierr.Internal(errors.New("failed event without an error"))
	}
	return e.APIError()
}

func (s *Server) unary(ctx context.Context, rc *fasthttp.RequestCtx, inf *inference, req *obs.Request) error {
	var res result
	err := s.deps.Dispatcher.Dispatch(ctx, inf.task, func(ev workers.Event) error {
		if ev.Type == workers.EventDelta && ev.Text != "" && res.firstText.IsZero() {
			res.firstText = s.clock.Now()
		}
		res.add(ev)
		return nil
	})
	if !res.firstText.IsZero() {
		req.FirstToken(res.firstText)
	}
	if err != nil {
		return err
	}
	if err := res.err(); err != nil {
		return err
	}
	req.SetUsage(res.done.Usage.PromptTokens, res.done.Usage.CompletionTokens)
	s.charge(ctx, inf.key, inf.reqID, res.done.Usage)
	if err := s.record(ctx, inf, res.done); err != nil {
		return err
	}
	inf.text, inf.hasText = res.text.String(), inf.task.Kind != workers.KindEmbedding
	s.observeAudit(inf, res.done)
	if inf.receiptID != "" {
		rc.Response.Header.Set(HeaderReceipt, inf.receiptID)
	}
	s.logDone(ctx, inf, res.done)
	usage := openai.NewUsage(res.done.Usage)
	switch inf.task.Kind {
	case workers.KindChat:
		// Rendered by hand (the common answer; encoding/json for the rest).
		text := res.text.String()
		body := make([]byte, 0, 320+len(text)+len(inf.task.Model)+len(inf.respID))
		rc.SetContentType("application/json")
		rc.SetStatusCode(fasthttp.StatusOK)
		rc.Response.SetBodyRaw(openai.AppendChatCompletion(body, inf.respID, inf.created, inf.task.Model,
			text, finishReason(res.done), usage))
		return nil
	case workers.KindCompletion:
		return writeJSON(rc, &openai.TextCompletion{
			ID: inf.respID, Object: "text_completion", Created: inf.created, Model: inf.task.Model,
			Choices: []openai.CompletionChoice{{Text: res.text.String(), FinishReason: openai.Ptr(finishReason(res.done))}},
			Usage:   &usage,
		})
	default:
		if len(res.done.Embeddings) != len(inf.task.Inputs) {
			return apierr.Internal(errors.New("worker returned the wrong number of embeddings"))
		}
		return writeJSON(rc, openai.NewEmbeddingList(inf.task.Model, inf.format, res.done.Embeddings, usage.PromptTokens))
	}
}

func finishReason(done *workers.Event) string {
	if done.FinishReason == "" {
		return "stop"
	}
	return done.FinishReason
}

// record makes the completion a receipt before the client sees the end of
// the response. It is not cut short by a client that has gone: the work was
// done and is billable.
func (s *Server) record(ctx context.Context, inf *inference, done *workers.Event) error {
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

func (s *Server) logDone(ctx context.Context, inf *inference, done *workers.Event) {
	u := openai.NewUsage(done.Usage)
	s.log.InfoContext(ctx, "request done", "request_id", inf.reqID, "model", inf.task.Model, "kind", inf.task.Kind,
		"stream", inf.stream, "prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens,
		"receipt", inf.receiptID)
}

// stream answers with SSE. It opens the dispatch first and waits for the
// first event, so an error before any output still gets its real status;
// only then does it commit to a 200 and hand the rest to a body stream
// writer. A failed write means the client is gone: cancel() makes the next
// onEvent fail, and the scheduler cancels the task on the worker.
func (s *Server) stream(ctx context.Context, cancel context.CancelFunc, rc *fasthttp.RequestCtx, inf *inference, req *obs.Request) error {
	events := make(chan workers.Event) // unbuffered: Dispatch cannot return before its events are taken
	done := make(chan error, 1)
	go func() {
		done <- s.deps.Dispatcher.Dispatch(ctx, inf.task, func(ev workers.Event) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		})
	}()

	var first workers.Event
	select {
	case first = <-events:
	case err := <-done:
		cancel()
		if err == nil {
			err = apierr.Internal(errors.New("dispatch ended without events"))
		}
		return err
	}
	if first.Type == workers.EventFailed {
		cancel()
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
	rc.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer cancel()
		sw.w = w
		err := sw.run(ctx, first, events, done)
		if err != nil {
			s.log.InfoContext(ctx, "stream ended early", "request_id", inf.reqID, "model", inf.task.Model, "err", err)
		}
		sw.obs.EndErr(err, s.clock.Now()) // headers said 200; the code still tells what failed
	})
	return nil
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
}

var errClientGone = errors.New("client disconnected")

func (sw *sseWriter) run(ctx context.Context, first workers.Event, events <-chan workers.Event, done <-chan error) error {
	if sw.inf.task.Kind == workers.KindChat {
		if err := sw.data(sw.chatChunk(openai.ChatDelta{Role: "assistant", Content: openai.Ptr("")}, nil)); err != nil {
			return err
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
		case derr := <-done:
			t.Stop()
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

// event writes one event; finished is true after the last write.
func (sw *sseWriter) event(ctx context.Context, ev workers.Event) (finished bool, err error) {
	inf := sw.inf
	switch ev.Type {
	case workers.EventDelta:
		if ev.Text == "" {
			return false, nil
		}
		sw.obs.FirstToken(sw.s.clock.Now())
		if inf.task.Kind == workers.KindChat {
			sw.buf = openai.AppendChatContentChunk(sw.buf[:0], inf.respID, inf.created, inf.task.Model, ev.Text)
		} else {
			sw.buf = openai.AppendTextChunk(sw.buf[:0], inf.respID, inf.created, inf.task.Model, ev.Text)
		}
		return false, sw.dataBytes(sw.buf)
	case workers.EventFailed:
		return true, sw.fail(ctx, eventAPIError(ev.Error))
	case workers.EventDone:
		sw.obs.SetUsage(ev.Usage.PromptTokens, ev.Usage.CompletionTokens)
		sw.s.charge(ctx, inf.key, inf.reqID, ev.Usage)
		if err := sw.s.record(ctx, inf, &ev); err != nil {
			return true, sw.fail(ctx, err)
		}
		sw.s.observeAudit(inf, &ev)
		reason := finishReason(&ev)
		if inf.task.Kind == workers.KindChat {
			err = sw.data(sw.chatChunk(openai.ChatDelta{}, &reason))
		} else {
			err = sw.data(sw.textChunk("", &reason))
		}
		if err != nil {
			return true, err
		}
		if inf.includeUsage {
			u := openai.NewUsage(ev.Usage)
			if inf.task.Kind == workers.KindChat {
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
	if werr := sw.raw("data: " + string(openai.MarshalError(ae)) + "\n\n"); werr != nil {
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
