// Package openai is the engine that forwards tasks to any OpenAI-compatible
// inference server running next to the worker: vLLM, SGLang, llama.cpp's
// server, Ollama, or a hosted API.
//
// Streamed chat and completion tasks are streamed from the upstream, with
// stream_options.include_usage set, so text reaches the client as it is made
// and only two timeouts apply: one for the response headers and one for
// silence between chunks; a long generation is never cut off by a
// whole-request timeout. A task that is not streamed (its client reads one
// JSON answer) and has a deadline is sent as a plain request: one response
// and one JSON decode instead of a chunk per token; its deadline, not the
// header timeout, bounds the wait for the answer. Cancelling the task's
// context aborts the upstream request, which vLLM and SGLang treat as an
// abort of the generation.
//
// Usage: when the upstream omits usage from a non-streamed answer,
// completion tokens are estimated at one per four bytes of text; from a
// stream, completion tokens are counted as the
// number of streamed chunks that carried text (vLLM and SGLang send one token
// per chunk by default, so this is exact for them and approximate for servers
// that coalesce tokens), and prompt tokens are reported as 0 — unknown — never
// guessed. Such requests are logged with "usage_estimated"=true (at warn
// level the first time, debug after) so the operator can see it.
//
// Errors are mapped to *apierr.Error: an upstream 4xx keeps its status and
// message (except 401/403, which concern the worker's own credentials and
// become 502), 429 keeps Retry-After, other 5xx become 502 "upstream_error",
// 503 and an unreachable upstream become 503 "upstream_error", and a header or
// idle timeout becomes 504 "upstream_timeout". An error reported inside a
// stream that already answered 200 — vLLM's and SGLang's
// `data: {"error": {...}}`, older vLLM's top-level `{"object": "error"}`,
// llama.cpp's `error: {...}` field line (followed by `data: [DONE]`), an
// `event: error` — ends the generation with that error, its numeric code
// taken as the status (so a prompt over llama.cpp's context is the client's
// 400); a stream that ends, with `[DONE]` or without, before any choice
// carried a finish reason is a 502. Neither is ever an answer: the worker
// then records at most the tokens its client already received (see
// docs/billing.md). With such an error Generate returns, as its Result,
// the completion tokens streamed so far (one per chunk).
//
// Load comes from the upstream's Prometheus endpoint (vLLM or SGLang gauges),
// cached briefly; see Load.
package openai

import (
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
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ai/tollgate/internal/h1"
	"github.com/tollgate-ai/tollgate/internal/task"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
)

// Defaults for Config's zero values.
const (
	DefaultHeaderTimeout = 60 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultDialTimeout   = 5 * time.Second
	DefaultMaxConns      = 256
	DefaultMaxEventBytes = 1 << 20
	DefaultMaxBodyBytes  = 64 << 20
	DefaultMetricsTTL    = 250 * time.Millisecond
	maxErrorBodyBytes    = 64 << 10
	maxMetricsBytes      = 8 << 20
)

// MetricsOff disables load scraping when given as Config.MetricsURL.
const MetricsOff = "off"

// Config configures an Engine.
type Config struct {
	// BaseURL is the upstream's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.
	BaseURL string `yaml:"base_url"`
	// APIKey, when set, is sent as "Authorization: Bearer <APIKey>".
	APIKey string `yaml:"api_key"`
	// Models are the versions served (name + weights manifest digest).
	Models []task.ModelVersion `yaml:"models"`
	// Capabilities are what the upstream serves beyond plain text, declared
	// for every model that lists none of its own: nil declares all of
	// task.KnownCapabilities (vLLM, SGLang and OpenAI itself serve them
	// all), an empty list none.
	Capabilities *[]task.Capability `yaml:"capabilities"`
	// UpstreamModels maps a served model name to the name the upstream
	// knows it by; names not listed are sent unchanged.
	UpstreamModels map[string]string `yaml:"upstream_models"`
	// MetricsURL is the upstream's Prometheus endpoint. Empty means BaseURL
	// without its trailing /v1, plus /metrics (where vLLM, SGLang and llama-server --metrics serve
	// it); MetricsOff disables scraping.
	MetricsURL string `yaml:"metrics_url"`

	HeaderTimeout time.Duration `yaml:"header_timeout"` // until response headers
	IdleTimeout   time.Duration `yaml:"idle_timeout"`   // between stream chunks, or while reading a body
	DialTimeout   time.Duration `yaml:"dial_timeout"`
	MaxConns      int           `yaml:"max_conns"`       // pooled keep-alive connections to the upstream
	MaxEventBytes int           `yaml:"max_event_bytes"` // bound on one SSE line/event
	MaxBodyBytes  int64         `yaml:"max_body_bytes"`  // bound on a non-streamed response
	MetricsTTL    time.Duration `yaml:"metrics_ttl"`     // how long one scrape is reused

	Clock  clock.Clock  `yaml:"-"`
	Logger *slog.Logger `yaml:"-"`
}

var hexDigest = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks the config and names the first bad field.
func (c *Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("base_url: %q is not an http(s) URL", c.BaseURL)
	}
	if c.MetricsURL != "" && c.MetricsURL != MetricsOff {
		m, err := url.Parse(c.MetricsURL)
		if err != nil || (m.Scheme != "http" && m.Scheme != "https") || m.Host == "" {
			return fmt.Errorf("metrics_url: %q is not an http(s) URL", c.MetricsURL)
		}
	}
	if len(c.Models) == 0 {
		return errors.New("models: at least one model version is required")
	}
	seen := map[string]bool{}
	for i, m := range c.Models {
		switch {
		case m.Name == "":
			return fmt.Errorf("models[%d].name: empty", i)
		case !hexDigest.MatchString(m.Digest):
			return fmt.Errorf("models[%d].digest: %q is not a lowercase hex SHA-256", i, m.Digest)
		case seen[m.Name]:
			return fmt.Errorf("models[%d].name: %q listed twice", i, m.Name)
		}
		if err := task.ValidateCapabilities(m.Capabilities); err != nil {
			return fmt.Errorf("models[%d].capabilities: %w", i, err)
		}
		seen[m.Name] = true
	}
	if c.Capabilities != nil {
		if err := task.ValidateCapabilities(*c.Capabilities); err != nil {
			return fmt.Errorf("capabilities: %w", err)
		}
	}
	for served, up := range c.UpstreamModels {
		if !seen[served] {
			return fmt.Errorf("upstream_models: %q is not one of models", served)
		}
		if up == "" {
			return fmt.Errorf("upstream_models[%q]: empty upstream name", served)
		}
	}
	for name, d := range map[string]time.Duration{"header_timeout": c.HeaderTimeout, "idle_timeout": c.IdleTimeout, "dial_timeout": c.DialTimeout, "metrics_ttl": c.MetricsTTL} {
		if d < 0 {
			return fmt.Errorf("%s: negative", name)
		}
	}
	if c.MaxConns < 0 || c.MaxEventBytes < 0 || c.MaxBodyBytes < 0 {
		return errors.New("max_conns, max_event_bytes, max_body_bytes: negative")
	}
	return nil
}

// Engine forwards tasks to an OpenAI-compatible upstream. It implements
// task.Engine and task.LoadReporter.
type Engine struct {
	cfg        Config
	base       string          // BaseURL without trailing slash
	metricsURL string          // "" when off
	up         *h1.Client      // generation and embeddings
	client     *http.Client    // the metrics scrape
	transport  *http.Transport // client's
	models     map[string]task.ModelVersion
	list       []task.ModelVersion
	clock      clock.Clock
	logger     *slog.Logger

	loadMu   sync.Mutex
	loadAt   time.Time
	load     task.Load
	loadErr  error
	loadOnce bool // a scrape has been made

	usageWarned atomic.Bool // "upstream omitted usage" logged at warn once; debug after
}

var (
	_ task.Engine       = (*Engine)(nil)
	_ task.LoadReporter = (*Engine)(nil)
)

// New validates cfg and builds an Engine. It does not contact the upstream.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("openai engine config: %w", err)
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxEventBytes == 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MetricsTTL == 0 {
		cfg.MetricsTTL = DefaultMetricsTTL
	}
	e := &Engine{
		cfg:    cfg,
		base:   strings.TrimRight(cfg.BaseURL, "/"),
		models: map[string]task.ModelVersion{},
		clock:  cfg.Clock,
		logger: cfg.Logger,
	}
	if e.clock == nil {
		e.clock = clock.Real{}
	}
	if e.logger == nil {
		e.logger = slog.Default()
	}
	switch cfg.MetricsURL {
	case MetricsOff:
	case "":
		e.metricsURL = strings.TrimSuffix(e.base, "/v1") + "/metrics"
	default:
		e.metricsURL = cfg.MetricsURL
	}
	caps := task.KnownCapabilities
	if cfg.Capabilities != nil {
		caps = *cfg.Capabilities
	}
	for _, m := range cfg.Models {
		if len(m.Capabilities) == 0 && len(caps) > 0 {
			m.Capabilities = slices.Clone(caps)
		}
		e.models[m.Name] = m
		e.list = append(e.list, m)
	}
	// Generation and embedding requests go over h1: written and read on
	// the task's own goroutine, no hand-off to transport goroutines.
	up, err := h1.New(e.base, h1.Options{DialTimeout: cfg.DialTimeout, MaxIdle: cfg.MaxConns, IdleTimeout: upstreamIdleConnTimeout})
	if err != nil {
		return nil, fmt.Errorf("openai engine config: %w", err)
	}
	e.up = up
	// The metrics scrape (once per MetricsTTL at most) uses net/http.
	e.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	e.client = &http.Client{Transport: e.transport}
	return e, nil
}

// upstreamIdleConnTimeout retires an idle upstream connection before the
// server would: uvicorn (vLLM, SGLang) closes keep-alive connections after
// 5 s idle, and a request sent on one it has just closed costs a retry.
const upstreamIdleConnTimeout = 4 * time.Second

// Close releases pooled connections.
func (e *Engine) Close() error {
	e.transport.CloseIdleConnections()
	return e.up.Close()
}

// Models lists the configured model versions.
func (e *Engine) Models() []task.ModelVersion {
	return append([]task.ModelVersion(nil), e.list...)
}

func (e *Engine) upstreamModel(name string) (string, error) {
	if _, ok := e.models[name]; !ok {
		return "", apierr.NotFound("model", "model_not_found", "the model %q is not served by this worker", name)
	}
	if up, ok := e.cfg.UpstreamModels[name]; ok {
		return up, nil
	}
	return name, nil
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type generateRequest struct {
	Model string `json:"model"`
	// Messages is the task's []task.Message, or []upstreamMessage when one
	// has parts, tool calls or a tool result (rich.go).
	Messages      any            `json:"messages,omitempty"`
	Prompt        *string        `json:"prompt,omitempty"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   float64        `json:"temperature"`
	TopP          float64        `json:"top_p,omitempty"`
	Seed          *int64         `json:"seed,omitempty"`
	Stop          []string       `json:"stop,omitempty"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`

	Tools             []task.Tool             `json:"tools,omitempty"`
	ToolChoice        json.RawMessage         `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool                   `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *upstreamResponseFormat `json:"response_format,omitempty"`
	Logprobs          bool                    `json:"logprobs,omitempty"`
	TopLogprobs       *int                    `json:"top_logprobs,omitempty"`
	N                 int                     `json:"n,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// Generate runs a chat or completion task on the upstream: streamed when
// the task is (or has no deadline), else as one request and one answer.
func (e *Engine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	model, err := e.upstreamModel(t.Model)
	if err != nil {
		return task.Result{}, err
	}
	stream := e.streamUpstream(t)
	req := generateRequest{
		Model: model, MaxTokens: t.MaxTokens, Temperature: t.Temperature, TopP: t.TopP,
		Seed: t.Seed, Stop: t.Stop, Stream: stream,
	}
	if stream {
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	var path string
	switch t.Kind {
	case task.KindChat:
		if len(t.Messages) == 0 {
			return task.Result{}, apierr.BadRequest("messages", "invalid_value", "messages must not be empty")
		}
		path, req.Messages = "/chat/completions", t.Messages
		if richMessages(t.Messages) {
			msgs, err := upstreamMessages(t.Messages)
			if err != nil {
				return task.Result{}, apierr.Internal(err)
			}
			req.Messages = msgs
		}
	case task.KindCompletion:
		prompt := t.Prompt
		path, req.Prompt = "/completions", &prompt
	default:
		return task.Result{}, apierr.BadRequest("", "invalid_value", "the openai engine cannot generate for a %q task", t.Kind)
	}
	applyRich(&req, t)
	body, err := json.Marshal(req)
	if err != nil {
		return task.Result{}, apierr.Internal(err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil) // aborts the upstream request on every early return
	headerTimeout := e.cfg.HeaderTimeout
	if !stream {
		// The answer's headers come only once the whole generation is done:
		// the task's deadline bounds the wait, not the header timeout.
		headerTimeout = 0
	}
	resp, err := e.post(ctx, cancel, path, body, headerTimeout)
	if err != nil {
		return task.Result{}, err
	}
	defer resp.Body.Close()

	idle := newWatchdog(e.clock, e.cfg.IdleTimeout, func() { cancel(errIdleTimeout) })
	defer idle.stop()
	if !stream {
		return e.generateWhole(ctx, t, resp.Body, emit)
	}
	events := newSSEReader(resp.Body, e.cfg.MaxEventBytes, idle.reset)
	defer events.release()

	choices := t.Choices()
	var (
		finish string
		done   bool
		got    *usage
		chunks int
		// partial is what is known of the usage when the stream fails
		// part way: the chunks streamed so far (the upstream's usage comes
		// only at the end). The agent records it for the tokens the client
		// already received.
		partial task.Result
	)
	for !done {
		data, err := events.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return partial, e.streamError(ctx, err)
		}
		if events.failed() {
			// llama.cpp's `error: {...}` line, or an `event: error`.
			return partial, streamErrorReport(data)
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			// Read the response's end so the connection returns to the pool.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			done = true
			break
		}
		var c upstreamEvent
		if err := decodeUpstream(data, &c); err != nil {
			return partial, upstreamFailure("the upstream sent a malformed stream event", err)
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			return partial, streamEventError(c.Error)
		}
		if c.Object == "error" {
			// Older vLLM: the whole event is its ErrorResponse.
			return partial, streamEventError(append(json.RawMessage(nil), data...))
		}
		for _, ch := range c.Choices {
			if ch.Index < 0 || ch.Index >= choices {
				continue
			}
			text := ch.Delta.Content
			if text == nil {
				text = ch.Text
			}
			calls := toolDeltas(ch.Delta.ToolCalls)
			if text != nil && *text != "" || len(calls) > 0 {
				chunks++
				partial.CompletionTokens = chunks
				d := task.Delta{Tokens: 1, ToolCalls: calls, Logprobs: nullable(ch.Logprobs), Choice: ch.Index}
				if text != nil {
					d.Text = *text
				}
				// More: the next event came in with this one (the
				// worker then sends both in one write).
				d.More = events.eventBuffered()
				if err := emit(d); err != nil {
					return partial, err
				}
			}
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				finish = mergeFinish(finish, *ch.FinishReason)
			}
		}
		if c.Usage != nil && c.Usage.PromptTokens >= 0 && c.Usage.CompletionTokens >= 0 {
			got = c.Usage
		}
	}
	if finish == "" {
		// Ended ([DONE] or EOF) without saying how the generation ended:
		// a server that hit an error it did not report, or a cut stream.
		// Never an answer: it would be billed as a complete one.
		if done {
			return partial, upstreamFailure("the upstream stream ended without a finish reason", errNoFinish)
		}
		return partial, upstreamFailure("the upstream stream ended before the generation finished", io.ErrUnexpectedEOF)
	}
	if abortedFinish(finish) {
		if got != nil {
			partial.PromptTokens = got.PromptTokens // the tokens streamed stay counted as chunks
		}
		return partial, upstreamFailure("the upstream aborted the generation", fmt.Errorf("finish_reason %q", finish))
	}
	res := task.Result{FinishReason: linkFinish(finish, t)}
	if got != nil {
		res.PromptTokens, res.CompletionTokens = got.PromptTokens, got.CompletionTokens
	} else {
		res.CompletionTokens = chunks
		e.logUsageEstimated(ctx, "upstream omitted usage; completion tokens counted from stream chunks, prompt tokens unknown (0)",
			slog.String("request_id", t.RequestID), slog.String("model", t.Model))
	}
	return res, nil
}

// abortedFinish reports whether an upstream's finish reason says the
// generation failed rather than ended: vLLM's and SGLang's "abort" (the
// engine aborted the request), or "error". Such an answer is cut short by
// the upstream's failure, never a complete one.
func abortedFinish(finish string) bool {
	return finish == "abort" || finish == "error"
}

// streamUpstream reports whether t is streamed from the upstream. A task
// whose client reads the whole answer at once is not, saving the upstream
// and the engine a chunk per token, unless it has no deadline: a
// non-streamed answer sends its headers only at the end, so without a
// deadline nothing but the header timeout would bound a long generation.
func (e *Engine) streamUpstream(t *task.Task) bool {
	return t.Stream || t.Deadline.IsZero()
}

// answerBufPool recycles the buffers non-streamed answers are read into.
var answerBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// generateWhole reads a non-streamed answer and emits its text as one
// delta. Without usage from the upstream, completion tokens are estimated
// at one per four bytes of text (prompt tokens unknown, 0) and logged as
// estimated.
func (e *Engine) generateWhole(ctx context.Context, t *task.Task, body io.Reader, emit func(task.Delta) error) (task.Result, error) {
	buf := answerBufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 1<<20 {
			answerBufPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(io.LimitReader(body, e.cfg.MaxBodyBytes+1)); err != nil {
		return task.Result{}, e.streamError(ctx, err)
	}
	if int64(buf.Len()) > e.cfg.MaxBodyBytes {
		return task.Result{}, upstreamFailure("the upstream's response is too large", fmt.Errorf("over %d bytes", e.cfg.MaxBodyBytes))
	}
	var a upstreamEvent
	if err := decodeUpstream(buf.Bytes(), &a); err != nil {
		return task.Result{}, upstreamFailure("the upstream sent a malformed response", err)
	}
	if len(a.Error) > 0 && string(a.Error) != "null" {
		return task.Result{}, streamEventError(a.Error)
	}
	if a.Object == "error" {
		return task.Result{}, streamEventError(append(json.RawMessage(nil), buf.Bytes()...))
	}
	choices := t.Choices()
	var finish string
	var deltas []task.Delta
	found := false
	for _, ch := range a.Choices {
		if ch.Index < 0 || ch.Index >= choices {
			continue
		}
		found = found || ch.Index == 0
		d := task.Delta{Choice: ch.Index, ToolCalls: toolDeltas(ch.Message.ToolCalls), Logprobs: nullable(ch.Logprobs)}
		switch {
		case ch.Message.Content != nil:
			d.Text = *ch.Message.Content
		case ch.Text != nil:
			d.Text = *ch.Text
		}
		for i := range d.ToolCalls {
			d.ToolCalls[i].Index = i // a message's calls in order, whatever it said
		}
		if ch.FinishReason != nil {
			finish = mergeFinish(finish, *ch.FinishReason)
		}
		deltas = append(deltas, d)
	}
	if !found {
		return task.Result{}, upstreamFailure("the upstream's response has no choice 0", errors.New("no choices"))
	}
	if abortedFinish(finish) {
		return task.Result{}, upstreamFailure("the upstream aborted the generation", fmt.Errorf("finish_reason %q", finish))
	}
	res := task.Result{FinishReason: linkFinish(finish, t)}
	bytes := 0
	for _, d := range deltas {
		bytes += len(d.Text)
		for _, c := range d.ToolCalls {
			bytes += len(c.Name) + len(c.Arguments)
		}
	}
	if u := a.Usage; u != nil && u.PromptTokens >= 0 && u.CompletionTokens >= 0 {
		res.PromptTokens, res.CompletionTokens = u.PromptTokens, u.CompletionTokens
	} else {
		res.CompletionTokens = (bytes + 3) / 4
		e.logUsageEstimated(ctx, "upstream omitted usage; completion tokens estimated from the text's length, prompt tokens unknown (0)",
			slog.String("request_id", t.RequestID), slog.String("model", t.Model))
	}
	// The completion tokens travel on the first delta; a choice with
	// nothing in it is not sent.
	tokens := res.CompletionTokens
	for _, d := range deltas {
		if d.Text == "" && len(d.ToolCalls) == 0 && tokens == 0 {
			continue
		}
		d.Tokens, tokens = tokens, 0
		if err := emit(d); err != nil {
			return task.Result{}, err
		}
	}
	return res, nil
}

// mergeFinish combines the finish reasons of several choices into the
// task's one: an abort wins, then tool_calls, then length, then stop.
func mergeFinish(have, next string) string {
	rank := func(f string) int {
		switch {
		case abortedFinish(f):
			return 4
		case f == task.FinishToolCalls:
			return 3
		case f == "length":
			return 2
		case f != "":
			return 1
		}
		return 0
	}
	if rank(next) > rank(have) {
		return next
	}
	return have
}

// linkFinish is the finish reason the link carries: "stop", "length",
// or "tool_calls" for a task that declared tools; an engine's other
// reasons (an upstream's "content_filter", say) end the text too.
func linkFinish(finish string, t *task.Task) string {
	switch {
	case finish == "length":
		return finish
	case finish == task.FinishToolCalls && len(t.Tools) > 0:
		return finish
	}
	return "stop"
}

type embedRequest struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
	Dimensions     int      `json:"dimensions,omitempty"`
}

type embedResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding embedding `json:"embedding"`
	} `json:"data"`
	Usage *usage `json:"usage"`
}

// Embed embeds inputs in one upstream call.
func (e *Engine) Embed(ctx context.Context, model string, inputs []string) (task.EmbedResult, error) {
	return e.EmbedDimensions(ctx, model, inputs, 0)
}

// EmbedDimensions embeds inputs in one upstream call, asking the upstream
// for vectors of the given length (0: the model's own).
func (e *Engine) EmbedDimensions(ctx context.Context, model string, inputs []string, dimensions int) (task.EmbedResult, error) {
	up, err := e.upstreamModel(model)
	if err != nil {
		return task.EmbedResult{}, err
	}
	if len(inputs) == 0 {
		return task.EmbedResult{}, apierr.BadRequest("input", "invalid_value", "input must not be empty")
	}
	body, err := json.Marshal(embedRequest{Model: up, Input: inputs, EncodingFormat: "float", Dimensions: dimensions})
	if err != nil {
		return task.EmbedResult{}, apierr.Internal(err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := e.post(ctx, cancel, "/embeddings", body, e.cfg.HeaderTimeout)
	if err != nil {
		return task.EmbedResult{}, err
	}
	defer resp.Body.Close()
	idle := newWatchdog(e.clock, e.cfg.IdleTimeout, func() { cancel(errIdleTimeout) })
	defer idle.stop()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, e.cfg.MaxBodyBytes+1))
	if err != nil {
		return task.EmbedResult{}, e.streamError(ctx, err)
	}
	if int64(len(raw)) > e.cfg.MaxBodyBytes {
		return task.EmbedResult{}, upstreamFailure("the upstream's embeddings response is too large", fmt.Errorf("over %d bytes", e.cfg.MaxBodyBytes))
	}
	vectors, promptTokens, err := decodeEmbeddings(raw, len(inputs))
	if err != nil {
		return task.EmbedResult{}, upstreamFailure("the upstream sent malformed embeddings", err)
	}
	if dimensions > 0 && len(vectors[0]) != dimensions {
		return task.EmbedResult{}, upstreamFailure("the upstream ignored dimensions", fmt.Errorf("vectors of %d dimensions, %d asked", len(vectors[0]), dimensions))
	}
	if promptTokens < 0 {
		promptTokens = 0
		e.logUsageEstimated(ctx, "upstream omitted usage; prompt tokens unknown (0)", slog.String("model", model))
	}
	return task.EmbedResult{Vectors: vectors, PromptTokens: promptTokens}, nil
}

// logUsageEstimated records a request whose usage the upstream did not send:
// at warn level the first time, so the operator learns the upstream's usage
// is incomplete, and at debug level after that.
func (e *Engine) logUsageEstimated(ctx context.Context, msg string, attrs ...slog.Attr) {
	level := slog.LevelDebug
	if e.usageWarned.CompareAndSwap(false, true) {
		level = slog.LevelWarn
	}
	e.logger.LogAttrs(ctx, level, msg, append(attrs, slog.Bool("usage_estimated", true))...)
}

// decodeEmbeddings checks an embeddings response against the number of
// inputs and returns the vectors in input order. promptTokens is -1 when the
// response carries no usage.
func decodeEmbeddings(raw []byte, n int) (vectors [][]float32, promptTokens int, err error) {
	var r embedResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, 0, err
	}
	if len(r.Data) != n {
		return nil, 0, fmt.Errorf("%d embeddings for %d inputs", len(r.Data), n)
	}
	vectors = make([][]float32, n)
	for _, d := range r.Data {
		switch {
		case d.Index < 0 || d.Index >= n:
			return nil, 0, fmt.Errorf("embedding index %d out of range", d.Index)
		case vectors[d.Index] != nil:
			return nil, 0, fmt.Errorf("embedding index %d repeated", d.Index)
		case len(d.Embedding) == 0:
			return nil, 0, fmt.Errorf("embedding %d is empty", d.Index)
		case len(d.Embedding) != len(r.Data[0].Embedding):
			return nil, 0, fmt.Errorf("embedding %d has %d dimensions, not %d", d.Index, len(d.Embedding), len(r.Data[0].Embedding))
		}
		vectors[d.Index] = d.Embedding
	}
	if r.Usage == nil {
		return vectors, -1, nil
	}
	if r.Usage.PromptTokens < 0 {
		return nil, 0, fmt.Errorf("negative prompt_tokens %d", r.Usage.PromptTokens)
	}
	return vectors, r.Usage.PromptTokens, nil
}

var (
	errHeaderTimeout = errors.New("upstream response header timeout")
	errIdleTimeout   = errors.New("upstream idle timeout")
	errNoFinish      = errors.New("[DONE] without a finish reason")
)

// post sends a JSON request and returns a 200 response, or an error: an
// *apierr.Error, or the caller's own cancellation. cancel must cancel ctx;
// the header timeout (none when 0) calls it with errHeaderTimeout, which
// aborts the request.
func (e *Engine) post(ctx context.Context, cancel context.CancelCauseFunc, path string, body []byte, headerTimeout time.Duration) (*h1.Response, error) {
	header := make([]h1.Field, 0, 4)
	header = append(header, h1.Field{Name: "Content-Type", Value: "application/json"},
		h1.Field{Name: "Accept", Value: "application/json, text/event-stream"})
	if e.cfg.APIKey != "" {
		header = append(header, h1.Field{Name: "Authorization", Value: "Bearer " + e.cfg.APIKey})
	}
	// W3C trace context: the upstream's spans join the request's trace.
	obs.InjectFields(ctx, func(k, v string) { header = append(header, h1.Field{Name: k, Value: v}) })
	var timer clock.Timer
	if headerTimeout > 0 {
		timer = e.clock.AfterFunc(headerTimeout, func() { cancel(errHeaderTimeout) })
	}
	resp, err := e.up.Do(ctx, &h1.Request{Method: http.MethodPost, Path: path, Header: header, Body: body})
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errHeaderTimeout):
			return nil, apierr.Timeout("upstream_timeout",
				fmt.Sprintf("the upstream inference server did not answer within %s", e.cfg.HeaderTimeout), err)
		case ctx.Err() != nil:
			return nil, cause // the caller's own cancellation or deadline
		}
		return nil, apierr.Unavailable("upstream_error", "the upstream inference server is unreachable", err)
	}
	if resp.Status != http.StatusOK {
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		return nil, statusError(resp.Status, resp.Header.Get("Retry-After"), raw)
	}
	return resp, nil
}

// streamError maps a failure while reading a response body.
func (e *Engine) streamError(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errIdleTimeout):
		return apierr.Timeout("upstream_timeout",
			fmt.Sprintf("the upstream inference server sent nothing for %s", e.cfg.IdleTimeout), err)
	case errors.Is(err, errEventTooLarge):
		return upstreamFailure("the upstream sent an oversized stream event", err)
	case ctx.Err() != nil && cause != nil:
		return cause
	}
	return upstreamFailure("the connection to the upstream inference server failed", err)
}

// upstreamFailure is a 502 for an upstream that misbehaved.
func upstreamFailure(msg string, cause error) *apierr.Error {
	return &apierr.Error{Status: http.StatusBadGateway, Type: apierr.TypeServer, Code: "upstream_error", Message: msg, Cause: cause}
}

// watchdog calls fire once d passes without a reset. A reset only notes
// the time (streams reset it on every line); the one timer, when it comes
// due, re-arms itself for whatever is left of the idle window.
type watchdog struct {
	clock clock.Clock
	d     time.Duration
	fire  func()

	mu      sync.Mutex
	last    time.Time // the latest reset
	t       clock.Timer
	stopped bool
}

func newWatchdog(c clock.Clock, d time.Duration, fire func()) *watchdog {
	w := &watchdog{clock: c, d: d, fire: fire, last: c.Now()}
	w.mu.Lock()
	w.t = c.AfterFunc(d, w.due)
	w.mu.Unlock()
	return w
}

func (w *watchdog) reset() {
	now := w.clock.Now()
	w.mu.Lock()
	w.last = now
	w.mu.Unlock()
}

func (w *watchdog) due() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	if left := w.d - w.clock.Now().Sub(w.last); left > 0 {
		w.t = w.clock.AfterFunc(left, w.due)
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.mu.Unlock()
	w.fire()
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
}
