// Package mockupstream is a fast mock OpenAI-compatible inference server on
// fasthttp, for benchmarks: /v1/chat/completions and /v1/completions (JSON,
// or SSE with a final usage chunk when stream_options.include_usage asks for
// it, then data: [DONE]), /v1/models, and a vLLM-style /metrics with zero
// load. Each response waits a fixed latency (plus optional uniform jitter)
// before its headers, and streams have an optional gap between chunks.
//
// Responses are assembled from byte templates rendered once at start, so a
// request costs one small JSON decode and a few appends: the mock must never
// be the bottleneck of the benchmark it serves. It is a simulator, never used
// by production code. Use internal/upstreamtest where tests need vLLM's exact
// behaviour (errors, embeddings, deterministic text).
package mockupstream

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Config shapes the mock. The zero value serves model "mock-llm" at once,
// 16 tokens of 4 bytes each.
type Config struct {
	// Models are the served model names (default "mock-llm").
	Models []string
	// Latency is the wait before the response headers (for streams: before
	// the first chunk).
	Latency time.Duration
	// Jitter adds a uniformly random extra wait in [0, Jitter).
	Jitter time.Duration
	// TokenInterval is the gap between streamed chunks (default none).
	TokenInterval time.Duration
	// Tokens is the completion length (default 16); a request's smaller
	// max_tokens shortens it.
	Tokens int
	// TokenBytes is the size of one token's text (default 4, at most 1024).
	TokenBytes int
	// Seed seeds the jitter.
	Seed uint64
}

// Validate checks cfg and names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Latency < 0:
		return errors.New("latency: negative")
	case c.Jitter < 0:
		return errors.New("jitter: negative")
	case c.TokenInterval < 0:
		return errors.New("token_interval: negative")
	case c.Tokens < 0 || c.Tokens > 1<<16:
		return fmt.Errorf("tokens: %d is outside [0, 65536]", c.Tokens)
	case c.TokenBytes < 0 || c.TokenBytes > 1024:
		return fmt.Errorf("token_bytes: %d is outside [0, 1024]", c.TokenBytes)
	}
	for i, m := range c.Models {
		if m == "" || strings.ContainsAny(m, "\"\\\x00\n") {
			return fmt.Errorf("models[%d]: %q is not a plain model name", i, m)
		}
	}
	return nil
}

func withDefaults(c Config) Config {
	if len(c.Models) == 0 {
		c.Models = []string{"mock-llm"}
	}
	if c.Tokens == 0 {
		c.Tokens = 16
	}
	if c.TokenBytes == 0 {
		c.TokenBytes = 4
	}
	return c
}

// Server is a running mock upstream.
type Server struct {
	// URL is the OpenAI base URL, ending in /v1.
	URL string
	// MetricsURL is the Prometheus endpoint.
	MetricsURL string

	cfg      Config
	ln       net.Listener
	srv      *fasthttp.Server
	models   map[string]*templates
	list     []byte
	token    []byte
	rng      atomic.Uint64
	requests atomic.Int64
	inFlight atomic.Int64
	done     chan struct{}
}

// Start serves the mock on a fresh 127.0.0.1 port.
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mockupstream: %w", err)
	}
	cfg = withDefaults(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mockupstream: listen: %w", err)
	}
	s := newServer(cfg)
	s.ln = ln
	s.URL = "http://" + ln.Addr().String() + "/v1"
	s.MetricsURL = "http://" + ln.Addr().String() + "/metrics"
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func newServer(cfg Config) *Server {
	s := &Server{cfg: cfg, models: map[string]*templates{}, done: make(chan struct{})}
	s.rng.Store(cfg.Seed | 1)
	s.token = []byte(" " + strings.Repeat("x", max(cfg.TokenBytes-1, 0)))[:cfg.TokenBytes]
	var list strings.Builder
	list.WriteString(`{"object":"list","data":[`)
	for i, m := range cfg.Models {
		s.models[m] = newTemplates(m)
		if i > 0 {
			list.WriteByte(',')
		}
		fmt.Fprintf(&list, `{"id":%q,"object":"model","created":0,"owned_by":"mock"}`, m)
	}
	list.WriteString("]}")
	s.list = []byte(list.String())
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		Name:                         "mockupstream",
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		MaxRequestBodySize:           8 << 20,
		CloseOnShutdown:              true,
	}
	return s
}

// Handler returns the request handler, for serving the mock on a listener
// of the caller's (fasthttputil.NewInmemoryListener in tests).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

// Requests returns how many API requests arrived so far.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Close stops the server and closes its connections.
func (s *Server) Close() error {
	err := s.srv.Shutdown()
	// Shutdown closes only the listeners Serve has taken up; a Close that
	// comes before the serving goroutine got there would otherwise leave
	// Serve to block in Accept for ever.
	_ = s.ln.Close()
	<-s.done
	return err
}

// templates are one model's response pieces, rendered once.
type templates struct {
	chatHead, chatTail       []byte // non-streamed chat body around the text
	textHead, textTail       []byte // non-streamed completion body around the text
	chatRole                 []byte // first chat chunk (role only)
	chatPre, chatPost        []byte // a chat content chunk around its text
	textPre, textPost        []byte // a completion chunk around its text
	chatFinishPre, finishEnd []byte // finish chunks around the reason
	textFinishPre            []byte
	usagePre                 []byte // usage chunk up to the numbers
}

func newTemplates(model string) *templates {
	q := strconv.Quote(model)
	return &templates{
		chatHead:      []byte(`{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":` + q + `,"choices":[{"index":0,"message":{"role":"assistant","content":"`),
		chatTail:      []byte(`"},"finish_reason":"`),
		textHead:      []byte(`{"id":"cmpl-mock","object":"text_completion","created":1700000000,"model":` + q + `,"choices":[{"index":0,"text":"`),
		textTail:      []byte(`","finish_reason":"`),
		chatRole:      []byte(`data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":` + q + `,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"),
		chatPre:       []byte(`data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":` + q + `,"choices":[{"index":0,"delta":{"content":"`),
		chatPost:      []byte(`"},"finish_reason":null}]}` + "\n\n"),
		textPre:       []byte(`data: {"id":"cmpl-mock","object":"text_completion","created":1700000000,"model":` + q + `,"choices":[{"index":0,"text":"`),
		textPost:      []byte(`","finish_reason":null}]}` + "\n\n"),
		chatFinishPre: []byte(`data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":` + q + `,"choices":[{"index":0,"delta":{},"finish_reason":"`),
		textFinishPre: []byte(`data: {"id":"cmpl-mock","object":"text_completion","created":1700000000,"model":` + q + `,"choices":[{"index":0,"text":"","finish_reason":"`),
		finishEnd:     []byte(`"}]}` + "\n\n"),
		usagePre:      []byte(`data: {"id":"mock","object":"chat.completion.chunk","created":1700000000,"model":` + q + `,"choices":[],"usage":`),
	}
}

// request is the part of an OpenAI request the mock reads.
type request struct {
	Model         string          `json:"model"`
	Stream        bool            `json:"stream"`
	MaxTokens     *int            `json:"max_tokens"`
	MaxCompTokens *int            `json:"max_completion_tokens"`
	Messages      []struct{}      `json:"messages"`
	Prompt        json.RawMessage `json:"prompt"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) handle(rc *fasthttp.RequestCtx) {
	path := string(rc.Path())
	switch {
	case path == "/v1/models" && rc.IsGet():
		rc.SetContentType("application/json")
		rc.SetBody(s.list)
	case path == "/metrics" && rc.IsGet():
		rc.SetContentType("text/plain; version=0.0.4")
		fmt.Fprintf(rc, "vllm:num_requests_running %d\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n", s.inFlight.Load())
	case (path == "/v1/chat/completions" || path == "/v1/completions") && rc.IsPost():
		s.generate(rc, path == "/v1/chat/completions")
	default:
		writeError(rc, fasthttp.StatusNotFound, "NotFoundError", "route not found: "+path)
	}
}

func (s *Server) generate(rc *fasthttp.RequestCtx, chat bool) {
	s.requests.Add(1)
	var req request
	if err := json.Unmarshal(rc.PostBody(), &req); err != nil {
		writeError(rc, fasthttp.StatusBadRequest, "BadRequestError", "invalid JSON body")
		return
	}
	t, ok := s.models[req.Model]
	if !ok {
		writeError(rc, fasthttp.StatusNotFound, "NotFoundError", "The model `"+req.Model+"` does not exist.")
		return
	}
	if chat && len(req.Messages) == 0 || !chat && len(req.Prompt) == 0 {
		writeError(rc, fasthttp.StatusBadRequest, "BadRequestError", "messages or prompt is required")
		return
	}
	tokens, finish := s.cfg.Tokens, "stop"
	for _, m := range []*int{req.MaxTokens, req.MaxCompTokens} {
		if m != nil && *m >= 0 && *m < tokens {
			tokens, finish = *m, "length"
		}
	}
	// A rough, deterministic prompt size: one token per 4 body bytes.
	prompt := len(rc.PostBody()) / 4
	s.inFlight.Add(1)
	if !req.Stream {
		defer s.inFlight.Add(-1)
		s.wait(s.cfg.Latency + s.jitter())
		rc.SetContentType("application/json")
		head, tail := t.textHead, t.textTail
		if chat {
			head, tail = t.chatHead, t.chatTail
		}
		var num [96]byte
		rc.Response.AppendBody(head)
		for range tokens {
			rc.Response.AppendBody(s.token)
		}
		rc.Response.AppendBody(tail)
		rc.Response.AppendBodyString(finish)
		rc.Response.AppendBodyString(`"}],"usage":`)
		rc.Response.AppendBody(append(appendUsage(num[:0], prompt, tokens), '}'))
		return
	}
	usage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	first := s.cfg.Latency + s.jitter()
	rc.SetContentType("text/event-stream")
	rc.Response.Header.Set("Cache-Control", "no-cache")
	rc.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.inFlight.Add(-1)
		s.wait(first)
		var b []byte
		if chat {
			b = append(b, t.chatRole...)
		}
		for i := range tokens {
			if i > 0 && s.cfg.TokenInterval > 0 {
				if w.Flush() != nil {
					return
				}
				time.Sleep(s.cfg.TokenInterval)
			}
			if chat {
				b = append(append(append(b, t.chatPre...), s.token...), t.chatPost...)
			} else {
				b = append(append(append(b, t.textPre...), s.token...), t.textPost...)
			}
			if _, err := w.Write(b); err != nil {
				return
			}
			b = b[:0]
		}
		if chat {
			b = append(b, t.chatFinishPre...)
		} else {
			b = append(b, t.textFinishPre...)
		}
		b = append(append(b, finish...), t.finishEnd...)
		if usage {
			b = append(b, t.usagePre...)
			b = appendUsage(b, prompt, tokens)
			b = append(b, "}\n\n"...)
		}
		b = append(b, "data: [DONE]\n\n"...)
		if _, err := w.Write(b); err != nil {
			return
		}
		_ = w.Flush()
	})
}

func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, '}')
}

// jitter draws a uniform wait in [0, Jitter) from a lock-free xorshift.
func (s *Server) jitter() time.Duration {
	if s.cfg.Jitter <= 0 {
		return 0
	}
	for {
		old := s.rng.Load()
		x := old
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if s.rng.CompareAndSwap(old, x) {
			return time.Duration(x % uint64(s.cfg.Jitter))
		}
	}
}

// wait blocks for d. The mock simulates a server busy computing; a plain
// sleep is what it models, and fasthttp gives each connection its own
// goroutine.
func (s *Server) wait(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

func writeError(rc *fasthttp.RequestCtx, status int, typ, msg string) {
	rc.SetStatusCode(status)
	rc.SetContentType("application/json")
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": status}})
	rc.SetBody(body)
}
