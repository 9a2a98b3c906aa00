package workers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/h1"
	"github.com/tollgate-ai/tollgate/internal/task"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
)

// DefaultMaxEventBytes bounds one NDJSON event line read from a worker.
const DefaultMaxEventBytes = 16 << 20

// CodeWorkerUnavailable is the code of errors from a failed worker link.
const CodeWorkerUnavailable = "worker_unavailable"

// ClientOptions configures a Client.
type ClientOptions struct {
	// MaxEventBytes bounds one event line (default 16 MiB: an embedding
	// task's vectors come in one event).
	MaxEventBytes int
	// Token, when set, is sent as "Authorization: Bearer <Token>" (see
	// WithLinkAuth); use the worker's Registered.SessionToken.
	Token  string
	Logger *slog.Logger
	// Obs traces each batch request (a client span, whose W3C context the
	// request carries to the worker). nil: off.
	Obs *obs.Provider
	// Records is what the worker's completion records are held to (see
	// RecordPolicy). The zero value still checks each record against the
	// task and the bytes relayed; the gateway sets the worker's
	// registered ID and models and the per-model usage bounds.
	Records RecordPolicy
	// Dial opens each connection of a link:// worker (a stream of the
	// session it dialled in on); required for such a worker, unused for
	// http(s) ones.
	Dial func(ctx context.Context) (net.Conn, error)
}

// Client is the gateway's end of the link to one worker. It is safe for
// concurrent use; connections are pooled and kept alive. Requests go over
// internal/h1: each batch is written and its event stream read on the
// calling goroutine, with no hand-off to transport goroutines.
type Client struct {
	base    string
	link    *h1.Client
	linkErr error // the base URL was refused; every call fails with it
	maxLine int
	token   string
	logger  *slog.Logger
	obs     *obs.Provider
	records RecordPolicy
}

// LinkError is a failure of the worker link itself (connect, status, broken
// or malformed stream) as opposed to a task's own failure. It is the Cause of
// the *apierr.Error that Run returns.
type LinkError struct {
	// Retryable is true when no event had been delivered, so the batch may be
	// sent again to another worker.
	Retryable bool
	Err       error
}

func (e *LinkError) Error() string { return "worker link: " + e.Err.Error() }
func (e *LinkError) Unwrap() error { return e.Err }

// Retryable reports whether err is a worker-link failure that happened before
// any event was delivered.
func Retryable(err error) bool {
	var le *LinkError
	return errors.As(err, &le) && le.Retryable
}

// MaxIdleLinkConnsPerWorker is how many idle keep-alive connections a link
// keeps for reuse. A batch holds one connection for as long as it runs, and
// a worker runs up to one batch per slot at once (one task each while it is
// not busy), so the pool keeps a worker's largest slot count in use: fewer
// would make every burst above the limit dial connections and close them
// again as the burst drains — a loop that piles up TIME_WAIT sockets and
// slows the very batches that hold connections open.
const MaxIdleLinkConnsPerWorker = 1024

// NewTransport returns a pooled net/http transport for a worker's own calls
// to the gateway (registration, heartbeats).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
		DisableCompression:    true,
	}
}

// NewClient returns a client for the worker serving NewHandler at baseURL
// (e.g. "http://10.0.0.5:9000"). Each link has its own connection pool:
// when a worker restarts on the same address (or a test's port is reused),
// its new link is never handed an idle connection to the old process.
func NewClient(baseURL string, opts ClientOptions) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), maxLine: opts.MaxEventBytes, token: opts.Token, logger: opts.Logger, obs: opts.Obs, records: opts.Records}
	if session, ok := LinkSession(c.base); ok {
		// An outbound worker: the host only names the Host header.
		if opts.Dial == nil {
			c.linkErr = fmt.Errorf("worker %s dialled in on a link this gateway does not hold", c.base)
		} else {
			c.link, c.linkErr = h1.New("http://"+session, h1.Options{MaxIdle: MaxIdleLinkConnsPerWorker, Dial: opts.Dial})
		}
	} else {
		c.link, c.linkErr = h1.New(c.base, h1.Options{MaxIdle: MaxIdleLinkConnsPerWorker})
	}
	if c.maxLine <= 0 {
		c.maxLine = DefaultMaxEventBytes
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Close releases the link's idle connections; batches in flight finish.
// The scheduler calls it when the worker leaves or registers anew.
func (c *Client) Close() error {
	if c.link != nil {
		return c.link.Close()
	}
	return nil
}

// BaseURL is the worker's address.
func (c *Client) BaseURL() string { return c.base }

// Run sends b to the worker and calls onEvent with each event in stream order
// (onEvent is never called concurrently). It returns nil once every task has
// ended with EventDone or EventFailed. A link failure returns an
// *apierr.Error (503 worker_unavailable, or the worker's own refusal status)
// whose cause is a *LinkError; see Retryable. Cancelling ctx closes the
// stream, which cancels the whole batch on the worker.
//
// With ClientOptions.Obs tracing, the request runs under a client span, a
// child of ctx's span or, when ctx has none (the scheduler runs a batch
// under no one request), of the first task's Traceparent; each task's own
// spans on the worker follow its Traceparent.
func (c *Client) Run(ctx context.Context, b *task.Batch, onEvent func(task.Event)) (err error) {
	if c.obs.Tracing() && b != nil {
		var span obs.Span
		if obs.Traceparent(ctx) == "" && len(b.Tasks) > 0 {
			ctx, span = c.obs.StartFromTraceparent(ctx, b.Tasks[0].Traceparent, "POST "+PathBatch, obs.KindClient)
		} else {
			ctx, span = c.obs.Start(ctx, "POST "+PathBatch, obs.KindClient)
		}
		span.SetString("tollgate.batch.id", b.ID)
		span.SetInt("tollgate.batch.size", len(b.Tasks))
		defer func() { span.SetError(err); span.End() }()
	}
	if c.linkErr != nil {
		return linkFailure(true, c.linkErr)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return apierr.Internal(fmt.Errorf("encode batch: %w", err))
	}
	sent := c.records.clock().Now()
	resp, err := c.link.Do(ctx, &h1.Request{Method: http.MethodPost, Path: PathBatch, Body: body,
		Header: c.header(ctx, h1.Field{Name: "Content-Type", Value: "application/json"}, h1.Field{Name: "Accept", Value: ContentTypeNDJSON})})
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		return linkFailure(true, err)
	}
	defer resp.Body.Close()
	if resp.Status != http.StatusOK {
		return refusal(resp.Status, resp.Header, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, ContentTypeNDJSON) {
		return linkFailure(true, fmt.Errorf("unexpected content type %q", ct))
	}

	v := newStreamValidator(b, &c.records, sent)
	r := linkReaderPool.Get().(*bufio.Reader)
	r.Reset(resp.Body)
	defer func() { r.Reset(nil); linkReaderPool.Put(r) }()
	var scratch []byte
	for !v.complete() {
		line, err := readLine(r, c.maxLine, &scratch)
		if err != nil {
			if ctx.Err() != nil {
				return ctxError(ctx)
			}
			if err == io.EOF {
				err = fmt.Errorf("stream ended with %d of %d tasks unfinished", v.open, len(b.Tasks))
			}
			return linkFailure(v.delivered == 0, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ev, err := v.decode(line)
		var refused *RecordError
		if errors.As(err, &refused) {
			c.logger.Warn("worker record refused", "batch", b.ID, "worker_url", c.base, "check", refused.Check, "err", err)
			return recordRefusal(refused)
		}
		if err != nil {
			c.logger.Warn("malformed worker event", "batch", b.ID, "worker_url", c.base, "err", err)
			return linkFailure(v.delivered == 0, err)
		}
		onEvent(ev)
	}
	c.finishStream(resp, r)
	return nil
}

// streamEndWait bounds how long Run waits, after a batch's last event, for
// the worker to end the response. Reading that end is what puts the
// connection back in the pool: closing a body before its end closes the
// connection, and a new batch then dials a new one.
const streamEndWait = time.Second

// finishStream reads the response's end after the last event, so the
// connection is reused. A worker that sends more, or takes too long, just
// costs its connection.
func (c *Client) finishStream(resp *h1.Response, r *bufio.Reader) {
	if r.Buffered() > 0 {
		return // trailing bytes after the last event: let Close drop the conn
	}
	t := time.AfterFunc(streamEndWait, resp.Abort)
	defer t.Stop()
	var one [1]byte
	if n, err := resp.Body.Read(one[:]); n == 0 && err == io.EOF {
		return
	}
	// Data after the batch's end (a protocol violation) or no end in
	// time: give the connection up.
	c.logger.Debug("worker stream did not end after its batch", "worker_url", c.base)
}

// linkReaderPool recycles the readers of event streams. Lines longer than
// the buffer are assembled by readLine, so the buffer is sized for the
// common event, not the largest.
var linkReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}

// Cancel asks the worker to stop one task of a running batch.
func (c *Client) Cancel(ctx context.Context, batchID string, index int) error {
	if c.linkErr != nil {
		return linkFailure(false, c.linkErr)
	}
	body, _ := json.Marshal(CancelRequest{BatchID: batchID, Index: index})
	resp, err := c.link.Do(ctx, &h1.Request{Method: http.MethodPost, Path: PathCancel, Body: body,
		Header: c.header(ctx, h1.Field{Name: "Content-Type", Value: "application/json"})})
	if err != nil {
		return linkFailure(false, err)
	}
	defer resp.Body.Close()
	if resp.Status/100 != 2 {
		return refusal(resp.Status, resp.Header, resp.Body)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return nil
}

// header is a request's header: fields, the trace context and the link
// token.
func (c *Client) header(ctx context.Context, fields ...h1.Field) []h1.Field {
	obs.InjectFields(ctx, func(k, v string) { fields = append(fields, h1.Field{Name: k, Value: v}) })
	if c.token != "" {
		fields = append(fields, h1.Field{Name: "Authorization", Value: "Bearer " + c.token})
	}
	return fields
}

// readLine reads one '\n'-terminated line of at most max bytes. The line is
// valid until the next read; it is the reader's own buffer when the line
// fits, else *scratch.
func readLine(r *bufio.Reader, max int, scratch *[]byte) ([]byte, error) {
	chunk, err := r.ReadSlice('\n')
	if err == nil {
		if len(chunk) > max {
			return nil, fmt.Errorf("event line exceeds %d bytes", max)
		}
		return chunk, nil
	}
	line := (*scratch)[:0]
	for {
		if len(line)+len(chunk) > max {
			return nil, fmt.Errorf("event line exceeds %d bytes", max)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			*scratch = line
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
		chunk, err = r.ReadSlice('\n')
	}
}

// streamValidator checks each event against the batch it answers: the index
// is a task of the batch, the task has not ended, the event carries what
// its type requires, and a done event's completion record describes the
// task and the bytes relayed for it (RecordPolicy).
type streamValidator struct {
	b         *task.Batch
	policy    *RecordPolicy
	sent      time.Time
	ended     []bool
	text      []relayed // per task: what its deltas carried
	open      int
	delivered int
}

func newStreamValidator(b *task.Batch, policy *RecordPolicy, sent time.Time) *streamValidator {
	return &streamValidator{b: b, policy: policy, sent: sent, ended: make([]bool, len(b.Tasks)), text: make([]relayed, len(b.Tasks)), open: len(b.Tasks)}
}

func (v *streamValidator) complete() bool { return v.open == 0 }

func (v *streamValidator) decode(line []byte) (task.Event, error) {
	var ev task.Event
	if err := decodeEvent(line, &ev); err != nil {
		return ev, fmt.Errorf("malformed event: %w", err)
	}
	if err := v.check(&ev); err != nil {
		return ev, err
	}
	v.delivered++
	return ev, nil
}

func (v *streamValidator) check(ev *task.Event) error {
	if ev.Index < 0 || ev.Index >= len(v.b.Tasks) {
		return fmt.Errorf("event for unknown task index %d (batch has %d)", ev.Index, len(v.b.Tasks))
	}
	if v.ended[ev.Index] {
		return fmt.Errorf("event %q for task %d after it ended", ev.Type, ev.Index)
	}
	t := &v.b.Tasks[ev.Index]
	switch ev.Type {
	case task.EventDelta:
		if ev.Tokens < 0 {
			return fmt.Errorf("task %d: negative token count", ev.Index)
		}
		if t.Kind == task.KindEmbedding {
			return fmt.Errorf("task %d: text delta for an embedding task", ev.Index)
		}
		if len(ev.Logprobs) > 0 && !t.Logprobs {
			// Logprobs are in no digest: relay only what the client asked.
			return fmt.Errorf("task %d: logprobs for a task that did not ask for them", ev.Index)
		}
		if t.RichOutput() {
			if err := v.text[ev.Index].addRich(t, ev); err != nil {
				return fmt.Errorf("task %d: %w", ev.Index, err)
			}
			return nil
		}
		if len(ev.ToolCalls) > 0 || ev.Choice != 0 {
			return fmt.Errorf("task %d: tool calls or choice %d for a task without tools or n", ev.Index, ev.Choice)
		}
		v.text[ev.Index].add(ev.Text)
		return nil
	case task.EventDone:
		if ev.Usage == nil || ev.Completion == nil {
			return fmt.Errorf("task %d: done without usage or completion", ev.Index)
		}
		if ev.Usage.PromptTokens < 0 || ev.Usage.CompletionTokens < 0 {
			return fmt.Errorf("task %d: negative usage", ev.Index)
		}
		if ev.FinishReason != "stop" && ev.FinishReason != "length" && !task.EndedEarly(ev.FinishReason) &&
			(ev.FinishReason != task.FinishToolCalls || len(t.Tools) == 0) {
			return fmt.Errorf("task %d: finish_reason %q", ev.Index, ev.FinishReason)
		}
		c := ev.Completion
		if c.RequestID != t.RequestID {
			return fmt.Errorf("task %d: completion names request %q, want %q", ev.Index, c.RequestID, t.RequestID)
		}
		if c.PromptTokens != ev.Usage.PromptTokens || c.CompletionTokens != ev.Usage.CompletionTokens {
			return fmt.Errorf("task %d: completion tokens disagree with usage", ev.Index)
		}
		if !task.IsHexDigest(c.RequestDigest) || !task.IsHexDigest(c.ResponseDigest) {
			return fmt.Errorf("task %d: completion digests are not 64 lowercase hex", ev.Index)
		}
		if t.Kind == task.KindEmbedding && len(ev.Embeddings) != len(t.Inputs) {
			return fmt.Errorf("task %d: %d embeddings for %d inputs", ev.Index, len(ev.Embeddings), len(t.Inputs))
		}
		if t.Dimensions > 0 {
			for j := range ev.Embeddings {
				if len(ev.Embeddings[j]) != t.Dimensions {
					return fmt.Errorf("task %d: embedding %d has %d dimensions, the request asked %d", ev.Index, j, len(ev.Embeddings[j]), t.Dimensions)
				}
			}
		}
		if err := v.policy.checkRecord(ev.Index, t, ev, &v.text[ev.Index], v.sent); err != nil {
			return err
		}
	case task.EventFailed:
		if ev.Error == nil || ev.Error.Message == "" {
			return fmt.Errorf("task %d: error event without error", ev.Index)
		}
	default:
		return fmt.Errorf("task %d: unknown event type %q", ev.Index, ev.Type)
	}
	v.ended[ev.Index] = true
	v.open--
	return nil
}

// CodeRecordRefused is the code of the 502 a client gets when its
// worker's completion record failed the gateway's checks.
const CodeRecordRefused = "worker_record_refused"

// recordRefusal is the error of a link whose worker sent a record the
// gateway refused: 502, not retried, its cause a *LinkError wrapping the
// *RecordError (the scheduler ejects the worker for it).
func recordRefusal(re *RecordError) error {
	return &apierr.Error{Status: http.StatusBadGateway, Type: apierr.TypeServer, Code: CodeRecordRefused,
		Message: "the worker's completion record failed the gateway's checks", Cause: &LinkError{Err: re}}
}

func linkFailure(retryable bool, err error) error {
	return apierr.Unavailable(CodeWorkerUnavailable, "the worker is unavailable", &LinkError{Retryable: retryable, Err: err})
}

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return apierr.Timeout("deadline_exceeded", "the request's deadline passed", ctx.Err())
	}
	return ctx.Err()
}

// refusal turns a non-2xx answer from the worker into an error carrying the
// worker's status and message. 4xx refusals of the request itself (invalid
// batch) keep their status and are not retryable; everything else (503
// draining or overloaded, other 5xx, 401/403 link authentication, an answer
// that is not an error body) becomes 503 worker_unavailable and is
// retryable on another worker.
func refusal(status int, h interface{ Get(string) string }, r io.Reader) error {
	var body ErrorBody
	raw, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	_ = json.Unmarshal(raw, &body)
	cause := &LinkError{Retryable: true, Err: fmt.Errorf("worker answered %d %s: %s", status, http.StatusText(status), body.Error.Message)}
	var e *apierr.Error
	switch {
	case body.Error.Message != "" && status >= 400 && status < 500 &&
		status != http.StatusUnauthorized && status != http.StatusForbidden:
		body.Error.Status = status
		e = body.Error.APIError()
		cause.Retryable = status == http.StatusTooManyRequests
	case body.Error.Message != "" && status == http.StatusServiceUnavailable:
		body.Error.Status = status // the body carries no status (OpenAI form)
		e = body.Error.APIError()
	default:
		e = &apierr.Error{Status: http.StatusServiceUnavailable, Type: apierr.TypeUnavailable, Code: CodeWorkerUnavailable, Message: "the worker is unavailable"}
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err == nil && ra > 0 {
		e.RetryAfter = time.Duration(ra) * time.Second
	}
	e.Cause = cause
	return e
}

func retryAfterSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s)
}

// ValidateWorkerURL checks that u is an absolute http(s) URL with a host and
// port and nothing else (no user info, query or fragment).
func ValidateWorkerURL(u string) error {
	if len(u) > 2048 {
		return errors.New("url longer than 2048 bytes")
	}
	if strings.HasPrefix(u, LinkScheme+"://") {
		if _, ok := LinkSession(u); !ok {
			return fmt.Errorf("%q is not %s://NAME (NAME 1..64 of [0-9a-z-])", u, LinkScheme)
		}
		return nil
	}
	p, err := url.Parse(u)
	if err != nil {
		return err
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https", p.Scheme)
	}
	if p.User != nil || p.RawQuery != "" || p.Fragment != "" || p.Opaque != "" {
		return errors.New("url must not carry user info, query or fragment")
	}
	host, port, err := net.SplitHostPort(p.Host)
	if err != nil || host == "" {
		return fmt.Errorf("host %q is not host:port", p.Host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q out of range", port)
	}
	if p.Path != "" && p.Path != "/" {
		return errors.New("url must not carry a path")
	}
	return nil
}

// LinkScheme names a worker reached over the link it dialled out on
// (internal/workerlink) instead of an address the gateway dials.
const LinkScheme = "link"

// LinkOutbound is the URL a worker on an outbound link registers with; the
// gateway records it as LinkURL of the session the registration came on.
const LinkOutbound = LinkScheme + "://outbound"

// LinkURL is the URL of the worker on link session id.
func LinkURL(session string) string { return LinkScheme + "://" + session }

// LinkSession is the session (or name) of a link:// URL.
func LinkSession(u string) (string, bool) {
	name, ok := strings.CutPrefix(u, LinkScheme+"://")
	if !ok || len(name) == 0 || len(name) > 64 {
		return "", false
	}
	for _, r := range name {
		if (r < '0' || r > '9') && (r < 'a' || r > 'z') && r != '-' {
			return "", false
		}
	}
	return name, true
}
