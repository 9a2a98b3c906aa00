// Package upstreamtest is a mock OpenAI-compatible inference server that
// behaves like vLLM, for tests: chat and text completions (streamed or not,
// with the final usage chunk when stream_options.include_usage asks for it),
// embeddings, /v1/models and a Prometheus /metrics with vLLM's (or SGLang's)
// load gauges. Output is deterministic, so tests can compute what to expect
// with Generate. Errors, missing usage and slow responses can be injected.
//
// It is a simulator of an upstream, never used by production code.
package upstreamtest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Config shapes the mock upstream. The zero value serves model "mock-llm"
// for generation and "mock-embed" for embeddings, vLLM-style metrics, no
// delays and no API key.
type Config struct {
	Models          []string // served generation models
	EmbeddingModels []string // served embedding models
	APIKey          string   // when set, requests need "Authorization: Bearer <APIKey>"
	OmitUsage       bool     // never send usage, even when asked (like some older servers)
	HeaderDelay     time.Duration
	TokenDelay      time.Duration // between streamed tokens
	EmbeddingDim    int           // default 8
	Flavor          string        // "vllm" (default), "sglang" or "llamacpp" (llama-server --metrics, no KV-cache gauge): the names on /metrics
	// ReportUsage, when set, is the usage reported for every generation
	// instead of the true counts: a lying upstream.
	ReportUsage *Usage

	// OnRequest is called when a request arrives, before any delay.
	OnRequest func(path string)
	// OnAbort is called when a client goes away before its response ended.
	OnAbort func(path string)
}

// Failure is an injected error: the status and OpenAI error body the next
// requests get. With AfterTokens > 0, or with a Form, a streamed generation
// answers 200, sends AfterTokens tokens and then the error inside the
// stream, in Form's shape.
type Failure struct {
	Status      int
	Type        string
	Code        string
	Message     string
	RetryAfter  string // Retry-After header value, if any
	AfterTokens int
	Form        StreamErrorForm
}

// StreamErrorForm is how a server reports an error inside a stream that has
// already answered 200.
type StreamErrorForm string

// The stream error forms of the servers the OpenAI engine fronts.
const (
	// FormVLLM (the default): `data: {"error": {"message", "type",
	// "param", "code"}}` then `data: [DONE]` (vLLM since 0.6, ErrorInfo).
	FormVLLM StreamErrorForm = "vllm"
	// FormVLLMObject: older vLLM's top-level ErrorResponse,
	// `data: {"object": "error", "message", "type", "param", "code"}`
	// then `data: [DONE]`.
	FormVLLMObject StreamErrorForm = "vllm-object"
	// FormSGLang: `data: {"error": {"object": "error", "message",
	// "type", "param", "code"}}` then `data: [DONE]`.
	FormSGLang StreamErrorForm = "sglang"
	// FormLlamaCpp: llama.cpp's llama-server, an SSE field named
	// "error" — `error: {"code", "message", "type"}` — then
	// `data: [DONE]` (its context-size error, for one).
	FormLlamaCpp StreamErrorForm = "llama.cpp"
	// FormEventError: an `event: error` whose data is the error object.
	FormEventError StreamErrorForm = "event"
	// FormNoFinish: no error at all, but the stream ends with
	// `data: [DONE]` and no choice ever carried a finish reason.
	FormNoFinish StreamErrorForm = "no-finish"
	// FormEOF: the stream just ends, with neither a finish reason nor
	// [DONE].
	FormEOF StreamErrorForm = "eof"
)

// Usage is a token count the mock reports.
type Usage struct {
	PromptTokens, CompletionTokens int
}

// Stats counts what the server saw.
type Stats struct {
	Requests int // API requests (not /metrics)
	Aborted  int // responses cut short by the client
	InFlight int
	Scrapes  int // GET /metrics
	Conns    int // TCP connections accepted (keep-alive reuse keeps it low)
}

// Server is a running mock upstream.
type Server struct {
	// URL is the OpenAI base URL, ending in /v1.
	URL string
	// MetricsURL is the Prometheus endpoint.
	MetricsURL string

	cfg Config
	srv *httptest.Server

	mu       sync.Mutex
	fail     []Failure
	stats    Stats
	waiting  int
	running  int
	kvUsage  float64
	lastBody map[string]json.RawMessage // last request body per path
}

// Start serves the mock on a fresh 127.0.0.1 port.
func Start(cfg Config) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("upstreamtest: listen: %v", err))
	}
	return Serve(ln, cfg)
}

// Serve serves the mock on ln (a `tollgate mock-upstream` command, say)
// until Close; cfg.Models names the generation models it answers for.
func Serve(ln net.Listener, cfg Config) *Server {
	if len(cfg.Models) == 0 {
		cfg.Models = []string{"mock-llm"}
	}
	if len(cfg.EmbeddingModels) == 0 {
		cfg.EmbeddingModels = []string{"mock-embed"}
	}
	if cfg.EmbeddingDim <= 0 {
		cfg.EmbeddingDim = 8
	}
	if cfg.Flavor == "" {
		cfg.Flavor = "vllm"
	}
	s := &Server{cfg: cfg, lastBody: map[string]json.RawMessage{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.api(s.chat))
	mux.HandleFunc("POST /v1/completions", s.api(s.completions))
	mux.HandleFunc("POST /v1/embeddings", s.api(s.embeddings))
	mux.HandleFunc("GET /v1/models", s.api(s.models))
	mux.HandleFunc("GET /metrics", s.metrics)
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.mu.Lock()
			s.stats.Conns++
			s.mu.Unlock()
		}
	}
	s.srv.Start()
	s.URL = s.srv.URL + "/v1"
	s.MetricsURL = s.srv.URL + "/metrics"
	return s
}

// Close stops the server and closes client connections.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// FailNext makes the next n API requests fail with f.
func (s *Server) FailNext(n int, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.fail = append(s.fail, f)
	}
}

// SetLoad sets the gauges /metrics reports. Requests in flight are added to
// running.
func (s *Server) SetLoad(waiting, running int, kvCacheUsage float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting, s.running, s.kvUsage = waiting, running, kvCacheUsage
}

// SetDelays changes the delay before response headers and between streamed
// tokens for the requests that arrive from now on.
func (s *Server) SetDelays(header, token time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.HeaderDelay, s.cfg.TokenDelay = header, token
}

func (s *Server) delays() (header, token time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.HeaderDelay, s.cfg.TokenDelay
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// LastBody returns the last request body received on path (e.g.
// "/v1/chat/completions"), or nil.
func (s *Server) LastBody(path string) json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastBody[path]
}

// Message is one chat message of a request. Content is the string, or
// the text parts joined with newlines; null reads as "".
type Message struct {
	Role       string          `json:"role"`
	Content    string          `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// UnmarshalJSON accepts content as a string, null or an array of parts.
func (m *Message) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role       string          `json:"role"`
		Content    json.RawMessage `json:"content"`
		ToolCalls  json.RawMessage `json:"tool_calls"`
		ToolCallID string          `json:"tool_call_id"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*m = Message{Role: raw.Role, ToolCalls: raw.ToolCalls, ToolCallID: raw.ToolCallID}
	if len(raw.Content) == 0 || string(raw.Content) == "null" {
		return nil
	}
	if json.Unmarshal(raw.Content, &m.Content) == nil {
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw.Content, &parts); err != nil {
		return fmt.Errorf("content: %w", err)
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	m.Content = strings.Join(texts, "\n")
	return nil
}

type genRequest struct {
	richRequest
	Model         string    `json:"model"`
	Messages      []Message `json:"messages"`
	Prompt        *string   `json:"prompt"`
	MaxTokens     *int      `json:"max_tokens"`
	Stream        bool      `json:"stream"`
	Stop          stopList  `json:"stop"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// stopList is "stop" as OpenAI accepts it: one string or a list.
type stopList []string

func (l *stopList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = stopList{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(l))
}

type embedRequest struct {
	Model      string   `json:"model"`
	Input      []string `json:"input"`
	Dimensions int      `json:"dimensions"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// vocabulary of the mock's deterministic output.
var vocabulary = strings.Fields(`the a quick small model runs on one GPU and streams tokens back to
the gateway while every worker signs what it served today with care`)

// Tokens is how the mock counts tokens in text: whitespace-separated words.
func Tokens(text string) int { return len(strings.Fields(text)) }

// ChatPromptTokens is the prompt token count the mock reports for messages:
// the words of every message plus 3 per message for the chat template.
func ChatPromptTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += Tokens(m.Content) + 3
	}
	return n
}

// Generate is the mock's deterministic output for a prompt: its tokens (each
// already carrying its leading space, so they concatenate to the text) and
// the finish reason. maxTokens <= 0 means no limit. A token equal to a stop
// string ends the output before it.
func Generate(prompt string, maxTokens int, stop []string) (tokens []string, finish string) {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	seed := h.Sum64()
	natural := 6 + int(seed%10)
	for i := 0; i < natural; i++ {
		if maxTokens > 0 && i == maxTokens {
			return tokens, "length"
		}
		w := vocabulary[(seed>>(i%32)+uint64(i)*7)%uint64(len(vocabulary))]
		for _, s := range stop {
			if s != "" && strings.TrimSpace(s) == w {
				return tokens, "stop"
			}
		}
		if i > 0 {
			w = " " + w
		}
		tokens = append(tokens, w)
	}
	return tokens, "stop"
}

// ChatPrompt is the string Generate is seeded with for a chat request.
func ChatPrompt(msgs []Message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content)
		b.WriteString("\n")
	}
	return b.String()
}

// Embedding is the mock's deterministic unit vector for input.
func Embedding(input string, dim int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(input))
	x := h.Sum64()
	v := make([]float32, dim)
	var norm float64
	for i := range v {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		f := float64(int64(x%2001)-1000) / 1000
		v[i] = float32(f)
		norm += f * f
	}
	if norm == 0 {
		v[0], norm = 1, 1
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(norm))
	}
	return v
}

type apiHandler func(w http.ResponseWriter, r *http.Request, body []byte, fail *Failure)

// api wraps a route with the shared steps: hooks, counters, auth, body,
// injected failures and the header delay.
func (s *Server) api(h apiHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.OnRequest != nil {
			s.cfg.OnRequest(r.URL.Path)
		}
		s.mu.Lock()
		s.stats.Requests++
		s.stats.InFlight++
		var fail *Failure
		if len(s.fail) > 0 {
			f := s.fail[0]
			s.fail = s.fail[1:]
			fail = &f
		}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.stats.InFlight--
			s.mu.Unlock()
		}()

		if s.cfg.APIKey != "" && r.Header.Get("Authorization") != "Bearer "+s.cfg.APIKey {
			writeError(w, http.StatusUnauthorized, "AuthenticationError", "", "invalid API key", "")
			return
		}
		body, err := readBody(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "BadRequestError", "", err.Error(), "")
			return
		}
		s.mu.Lock()
		s.lastBody[r.URL.Path] = body
		s.mu.Unlock()
		headerDelay, _ := s.delays()
		if !s.wait(r, headerDelay) {
			return
		}
		if fail != nil && fail.AfterTokens <= 0 && fail.Form == "" {
			writeError(w, fail.Status, fail.Type, fail.Code, fail.Message, fail.RetryAfter)
			return
		}
		h(w, r, body, fail)
	}
}

// wait sleeps d unless the client goes away first; false means it went away.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil || s.aborted(r)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return s.aborted(r)
	}
}

func (s *Server) aborted(r *http.Request) bool {
	s.mu.Lock()
	s.stats.Aborted++
	s.mu.Unlock()
	if s.cfg.OnAbort != nil {
		s.cfg.OnAbort(r.URL.Path)
	}
	return false
}

func readBody(r *http.Request) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if b.Len() > 8<<20 {
			return nil, fmt.Errorf("body too large")
		}
		if err != nil {
			break
		}
	}
	return []byte(b.String()), nil
}

// writeError writes an error in the OpenAI form vLLM uses.
func writeError(w http.ResponseWriter, status int, typ, code, msg, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	body := map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": codeValue(code, status)}}
	json.NewEncoder(w).Encode(body)
}

// codeValue is the code as vLLM sends it: the given string, else the status number.
func codeValue(code string, status int) any {
	if code != "" {
		return code
	}
	return status
}

func (s *Server) serves(models []string, m string) bool {
	for _, x := range models {
		if x == m {
			return true
		}
	}
	return false
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte, fail *Failure) {
	var req genRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, 400, "BadRequestError", "", "invalid JSON: "+err.Error(), "")
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, 400, "BadRequestError", "", "messages must not be empty", "")
		return
	}
	s.generate(w, r, &req, ChatPrompt(req.Messages), ChatPromptTokens(req.Messages), true, fail)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request, body []byte, fail *Failure) {
	var req genRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, 400, "BadRequestError", "", "invalid JSON: "+err.Error(), "")
		return
	}
	if req.Prompt == nil {
		writeError(w, 400, "BadRequestError", "", "prompt is required", "")
		return
	}
	s.generate(w, r, &req, *req.Prompt, Tokens(*req.Prompt), false, fail)
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, req *genRequest, prompt string, promptTokens int, chat bool, fail *Failure) {
	if !s.serves(s.cfg.Models, req.Model) {
		writeError(w, 404, "NotFoundError", "", fmt.Sprintf("The model `%s` does not exist.", req.Model), "")
		return
	}
	max := 0
	if req.MaxTokens != nil {
		max = *req.MaxTokens
	}
	if chat && req.rich() {
		s.generateRich(w, r, req, prompt, promptTokens, max)
		return
	}
	tokens, finish := Generate(prompt, max, req.Stop)
	_, tokenDelay := s.delays()
	u := usage{PromptTokens: promptTokens, CompletionTokens: len(tokens), TotalTokens: promptTokens + len(tokens)}
	if r := s.cfg.ReportUsage; r != nil {
		u = usage{PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, TotalTokens: r.PromptTokens + r.CompletionTokens}
	}
	id := "cmpl-mock"
	object := "text_completion"
	if chat {
		id, object = "chatcmpl-mock", "chat.completion"
	}
	created := time.Now().Unix()

	if !req.Stream {
		text := strings.Join(tokens, "")
		choice := map[string]any{"index": 0, "finish_reason": finish}
		if chat {
			choice["message"] = map[string]any{"role": "assistant", "content": text}
		} else {
			choice["text"] = text
		}
		resp := map[string]any{"id": id, "object": object, "created": created, "model": req.Model, "choices": []any{choice}}
		if !s.cfg.OmitUsage {
			resp["usage"] = u
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !s.cfg.OmitUsage
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	chunk := func(delta map[string]any, text *string, finish any) map[string]any {
		c := map[string]any{"index": 0, "finish_reason": finish}
		if chat {
			c["delta"] = delta
			object = "chat.completion.chunk"
		} else {
			c["text"] = *text
			c["logprobs"] = nil
		}
		m := map[string]any{"id": id, "object": object, "created": created, "model": req.Model, "choices": []any{c}}
		if includeUsage {
			m["usage"] = nil
		}
		return m
	}
	if chat && !send(chunk(map[string]any{"role": "assistant", "content": ""}, nil, nil)) {
		s.aborted(r)
		return
	}
	for i, tok := range tokens {
		if fail != nil && i == fail.AfterTokens {
			s.streamError(w, fail)
			if flusher != nil {
				flusher.Flush()
			}
			return
		}
		if i > 0 && !s.wait(r, tokenDelay) {
			return
		}
		t := tok
		if !send(chunk(map[string]any{"content": tok}, &t, nil)) {
			s.aborted(r)
			return
		}
	}
	empty := ""
	if !send(chunk(map[string]any{}, &empty, finish)) {
		s.aborted(r)
		return
	}
	if includeUsage {
		send(map[string]any{"id": id, "object": object, "created": created, "model": req.Model, "choices": []any{}, "usage": u})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

// streamError writes f inside a stream in f.Form's shape, and what the
// server sends after it.
func (s *Server) streamError(w http.ResponseWriter, f *Failure) {
	code := codeValue(f.Code, f.Status)
	inner := map[string]any{"message": f.Message, "type": f.Type, "param": nil, "code": code}
	line := func(field string, v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "%s: %s\n\n", field, b)
	}
	done := func() { fmt.Fprint(w, "data: [DONE]\n\n") }
	switch f.Form {
	case FormVLLMObject:
		line("data", map[string]any{"object": "error", "message": f.Message, "type": f.Type, "param": nil, "code": code})
		done()
	case FormSGLang:
		line("data", map[string]any{"error": map[string]any{"object": "error", "message": f.Message, "type": f.Type, "param": nil, "code": code}})
		done()
	case FormLlamaCpp:
		line("error", map[string]any{"code": code, "message": f.Message, "type": f.Type})
		done()
	case FormEventError:
		fmt.Fprint(w, "event: error\n")
		line("data", inner)
	case FormNoFinish:
		done()
	case FormEOF:
	default:
		line("data", map[string]any{"error": inner})
		done()
	}
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request, body []byte, _ *Failure) {
	var req embedRequest
	if err := json.Unmarshal(body, &req); err != nil {
		// "input" may also be one string.
		var one struct {
			Model string `json:"model"`
			Input string `json:"input"`
		}
		if err2 := json.Unmarshal(body, &one); err2 != nil {
			writeError(w, 400, "BadRequestError", "", "invalid JSON: "+err.Error(), "")
			return
		}
		req = embedRequest{Model: one.Model, Input: []string{one.Input}}
	}
	if !s.serves(s.cfg.EmbeddingModels, req.Model) {
		writeError(w, 404, "NotFoundError", "", fmt.Sprintf("The model `%s` does not exist.", req.Model), "")
		return
	}
	if len(req.Input) == 0 {
		writeError(w, 400, "BadRequestError", "", "input must not be empty", "")
		return
	}
	dim := s.cfg.EmbeddingDim
	if req.Dimensions != 0 {
		// Shortened embeddings, as OpenAI's text-embedding-3 models: any
		// length up to the model's own.
		if req.Dimensions < 1 || req.Dimensions > s.cfg.EmbeddingDim {
			writeError(w, 400, "BadRequestError", "dimensions", fmt.Sprintf("dimensions must be in [1, %d], got %d", s.cfg.EmbeddingDim, req.Dimensions), "")
			return
		}
		dim = req.Dimensions
	}
	data := make([]any, len(req.Input))
	tokens := 0
	// Returned in reverse order, with their index, to check clients sort by index.
	for i := range req.Input {
		j := len(req.Input) - 1 - i
		data[i] = map[string]any{"object": "embedding", "index": j, "embedding": Embedding(req.Input[j], dim)}
		tokens += Tokens(req.Input[j])
	}
	resp := map[string]any{"object": "list", "model": req.Model, "data": data}
	if !s.cfg.OmitUsage {
		resp["usage"] = map[string]int{"prompt_tokens": tokens, "total_tokens": tokens}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request, _ []byte, _ *Failure) {
	var data []any
	for _, m := range append(append([]string(nil), s.cfg.Models...), s.cfg.EmbeddingModels...) {
		data = append(data, map[string]any{"id": m, "object": "model", "owned_by": "vllm"})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	s.stats.Scrapes++
	waiting, running, kv := s.waiting, s.running+s.stats.InFlight, s.kvUsage
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	model := s.cfg.Models[0]
	if s.cfg.Flavor == "llamacpp" {
		// llama-server's gauges carry no labels; recent builds have no
		// KV-cache gauge.
		fmt.Fprintf(w, "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\n")
		fmt.Fprintf(w, "llamacpp:requests_processing %d\n", running)
		fmt.Fprintf(w, "# HELP llamacpp:requests_deferred Number of requests deferred.\n# TYPE llamacpp:requests_deferred gauge\n")
		fmt.Fprintf(w, "llamacpp:requests_deferred %d\n", waiting)
		fmt.Fprintf(w, "# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.\n# TYPE llamacpp:predicted_tokens_seconds gauge\n")
		fmt.Fprintf(w, "llamacpp:predicted_tokens_seconds 128.5\n")
		return
	}
	if s.cfg.Flavor == "sglang" {
		fmt.Fprintf(w, "# HELP sglang:num_running_reqs The number of running requests.\n# TYPE sglang:num_running_reqs gauge\n")
		fmt.Fprintf(w, "sglang:num_running_reqs{model_name=%q,tp_rank=\"0\"} %d\n", model, running)
		fmt.Fprintf(w, "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n# TYPE sglang:num_queue_reqs gauge\n")
		fmt.Fprintf(w, "sglang:num_queue_reqs{model_name=%q,tp_rank=\"0\"} %d\n", model, waiting)
		fmt.Fprintf(w, "# HELP sglang:token_usage The token usage.\n# TYPE sglang:token_usage gauge\n")
		fmt.Fprintf(w, "sglang:token_usage{model_name=%q,tp_rank=\"0\"} %g\n", model, kv)
		return
	}
	fmt.Fprintf(w, "# HELP vllm:num_requests_running Number of requests in model execution batches.\n# TYPE vllm:num_requests_running gauge\n")
	fmt.Fprintf(w, "vllm:num_requests_running{engine=\"0\",model_name=%q} %d.0\n", model, running)
	fmt.Fprintf(w, "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n# TYPE vllm:num_requests_waiting gauge\n")
	fmt.Fprintf(w, "vllm:num_requests_waiting{engine=\"0\",model_name=%q} %d.0\n", model, waiting)
	fmt.Fprintf(w, "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n# TYPE vllm:kv_cache_usage_perc gauge\n")
	fmt.Fprintf(w, "vllm:kv_cache_usage_perc{engine=\"0\",model_name=%q} %g\n", model, kv)
}
