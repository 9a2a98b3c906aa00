package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

const digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// hangGuard bounds waits on another goroutine so a bug fails the test
// instead of hanging it; it is never a timing assertion.
const hangGuard = 10 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEngine(t *testing.T, up *upstreamtest.Server, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{
		BaseURL: up.URL,
		Models: []task.ModelVersion{
			{Name: "mock-llm", Digest: digest},
			{Name: "llama3", Digest: digest},
			{Name: "mock-embed", Digest: digest, Embeddings: true},
		},
		UpstreamModels: map[string]string{"llama3": "mock-llm"},
		Logger:         quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type collected struct {
	text   string
	deltas int
	tokens int
}

func (c *collected) emit(d task.Delta) error {
	c.text += d.Text
	c.tokens += d.Tokens
	c.deltas++
	return nil
}

func TestGenerate(t *testing.T) {
	msgs := []task.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello there"}}
	upMsgs := []upstreamtest.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello there"}}
	chatPrompt := upstreamtest.ChatPrompt(upMsgs)
	tests := []struct {
		name      string
		omitUsage bool
		task      task.Task
		prompt    string // what the mock generates from
		max       int
		wantUsage func(completion int) task.Result
	}{
		{
			name: "chat with usage", task: task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: msgs},
			prompt: chatPrompt,
			wantUsage: func(n int) task.Result {
				return task.Result{PromptTokens: upstreamtest.ChatPromptTokens(upMsgs), CompletionTokens: n}
			},
		},
		{
			name: "completion with usage", task: task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "once upon a time"},
			prompt:    "once upon a time",
			wantUsage: func(n int) task.Result { return task.Result{PromptTokens: 4, CompletionTokens: n} },
		},
		{
			name: "max tokens ends with length", task: task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "once upon a time", MaxTokens: 3},
			prompt: "once upon a time", max: 3,
			wantUsage: func(n int) task.Result { return task.Result{PromptTokens: 4, CompletionTokens: n} },
		},
		{
			name: "served name mapped to upstream name", task: task.Task{Kind: task.KindChat, Model: "llama3", Messages: msgs},
			prompt: chatPrompt,
			wantUsage: func(n int) task.Result {
				return task.Result{PromptTokens: upstreamtest.ChatPromptTokens(upMsgs), CompletionTokens: n}
			},
		},
		{
			name: "omitted usage counts chunks, prompt unknown", omitUsage: true,
			task:      task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: msgs},
			prompt:    chatPrompt,
			wantUsage: func(n int) task.Result { return task.Result{PromptTokens: 0, CompletionTokens: n} },
		},
	}
	// A streamed task, or one without a deadline, streams from the
	// upstream; an unstreamed task with a deadline asks for one answer.
	modes := []struct {
		name           string
		stream         bool
		deadline       time.Time
		upstreamStream bool
	}{
		{"streamed", true, time.Time{}, true},
		{"unstreamed without deadline", false, time.Time{}, true},
		{"unstreamed with deadline", false, time.Now().Add(time.Hour), false},
	}
	for _, tc := range tests {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				up := upstreamtest.Start(upstreamtest.Config{OmitUsage: tc.omitUsage})
				defer up.Close()
				e := newEngine(t, up, nil)
				tk := tc.task
				tk.Stream, tk.Deadline = m.stream, m.deadline
				var got collected
				res, err := e.Generate(context.Background(), &tk, got.emit)
				if err != nil {
					t.Fatal(err)
				}
				tokens, finish := upstreamtest.Generate(tc.prompt, tc.max, nil)
				wantText := strings.Join(tokens, "")
				want := tc.wantUsage(len(tokens))
				wantDeltas := len(tokens)
				if !m.upstreamStream {
					wantDeltas = 1
					if tc.omitUsage {
						want.CompletionTokens = (len(wantText) + 3) / 4
					}
				}
				want.FinishReason = finish
				if diff := cmp.Diff(want, res); diff != "" {
					t.Errorf("result (-want +got):\n%s", diff)
				}
				if got.text != wantText || got.deltas != wantDeltas {
					t.Errorf("text %q in %d deltas, want %q in %d", got.text, got.deltas, wantText, wantDeltas)
				}
				if got.tokens != res.CompletionTokens {
					t.Errorf("deltas carry %d tokens, result says %d", got.tokens, res.CompletionTokens)
				}
				path := "/v1/chat/completions"
				if tc.task.Kind == task.KindCompletion {
					path = "/v1/completions"
				}
				var sent struct {
					Model         string `json:"model"`
					Stream        bool   `json:"stream"`
					StreamOptions *struct {
						IncludeUsage bool `json:"include_usage"`
					} `json:"stream_options"`
				}
				if err := json.Unmarshal(up.LastBody(path), &sent); err != nil {
					t.Fatal(err)
				}
				wantIncludeUsage := m.upstreamStream
				if sent.Model != "mock-llm" || sent.Stream != m.upstreamStream || (sent.StreamOptions != nil && sent.StreamOptions.IncludeUsage) != wantIncludeUsage {
					t.Errorf("upstream request %s, want model mock-llm, stream=%v with include_usage", up.LastBody(path), m.upstreamStream)
				}
			})
		}
	}
}

func TestGenerateRejects(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	e := newEngine(t, up, nil)
	tests := []struct {
		name       string
		task       task.Task
		wantStatus int
		wantCode   string
	}{
		{"unknown model", task.Task{Kind: task.KindChat, Model: "gpt-9", Messages: []task.Message{{Role: "user", Content: "x"}}}, 404, "model_not_found"},
		{"no messages", task.Task{Kind: task.KindChat, Model: "mock-llm"}, 400, "invalid_value"},
		{"embedding kind", task.Task{Kind: task.KindEmbedding, Model: "mock-llm"}, 400, "invalid_value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Generate(context.Background(), &tc.task, (&collected{}).emit)
			checkAPIErr(t, err, tc.wantStatus, tc.wantCode)
		})
	}
	if n := up.Stats().Requests; n != 0 {
		t.Errorf("%d upstream requests for rejected tasks", n)
	}
}

func checkAPIErr(t *testing.T, err error, status int, code string) *apierr.Error {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *apierr.Error", err)
	}
	if ae.Status != status || (code != "" && ae.Code != code) {
		t.Fatalf("got %d %q (%v), want %d %q", ae.Status, ae.Code, err, status, code)
	}
	return ae
}

func TestUpstreamErrors(t *testing.T) {
	chat := task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: []task.Message{{Role: "user", Content: "hi"}}}
	tests := []struct {
		name       string
		fail       upstreamtest.Failure
		wantStatus int
		wantCode   string
		wantType   string
		wantMsg    string
		wantRetry  time.Duration
		wantDeltas int
	}{
		{name: "400 passes through", fail: upstreamtest.Failure{Status: 400, Type: "BadRequestError", Message: "max_tokens is too large"},
			wantStatus: 400, wantType: apierr.TypeInvalidRequest, wantMsg: "max_tokens is too large"},
		{name: "404 keeps code", fail: upstreamtest.Failure{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Message: "no such model"},
			wantStatus: 404, wantCode: "model_not_found", wantType: apierr.TypeInvalidRequest, wantMsg: "no such model"},
		{name: "429 keeps Retry-After", fail: upstreamtest.Failure{Status: 429, Type: "rate_limit_error", Message: "slow down", RetryAfter: "7"},
			wantStatus: 429, wantCode: "upstream_rate_limited", wantType: apierr.TypeRateLimit, wantMsg: "slow down", wantRetry: 7 * time.Second},
		{name: "401 is the worker's problem", fail: upstreamtest.Failure{Status: 401, Type: "AuthenticationError", Message: "bad key"},
			wantStatus: 502, wantCode: "upstream_error", wantType: apierr.TypeServer},
		{name: "500 becomes 502", fail: upstreamtest.Failure{Status: 500, Type: "InternalServerError", Message: "CUDA error: out of memory"},
			wantStatus: 502, wantCode: "upstream_error", wantType: apierr.TypeServer, wantMsg: "the upstream inference server failed (status 500)"},
		{name: "503 stays 503", fail: upstreamtest.Failure{Status: 503, Message: "loading"},
			wantStatus: 503, wantCode: "upstream_error", wantType: apierr.TypeUnavailable},
		{name: "error event mid-stream", fail: upstreamtest.Failure{Status: 500, Type: "InternalServerError", Message: "engine dead", AfterTokens: 2},
			wantStatus: 502, wantCode: "upstream_error", wantType: apierr.TypeServer, wantDeltas: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.Start(upstreamtest.Config{})
			defer up.Close()
			up.FailNext(1, tc.fail)
			e := newEngine(t, up, nil)
			var got collected
			_, err := e.Generate(context.Background(), &chat, got.emit)
			ae := checkAPIErr(t, err, tc.wantStatus, tc.wantCode)
			if ae.Type != tc.wantType {
				t.Errorf("type %q, want %q", ae.Type, tc.wantType)
			}
			if tc.wantMsg != "" && ae.Message != tc.wantMsg {
				t.Errorf("message %q, want %q", ae.Message, tc.wantMsg)
			}
			if ae.RetryAfter != tc.wantRetry {
				t.Errorf("RetryAfter %v, want %v", ae.RetryAfter, tc.wantRetry)
			}
			if got.deltas != tc.wantDeltas {
				t.Errorf("%d deltas before the error, want %d", got.deltas, tc.wantDeltas)
			}
		})
	}
}

func TestUnreachableUpstream(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	e := newEngine(t, up, nil)
	up.Close()
	tk := task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "x"}
	_, err := e.Generate(context.Background(), &tk, (&collected{}).emit)
	checkAPIErr(t, err, 503, "upstream_error")
}

// signal returns a hook that reports each call on a channel.
func signal() (func(string), chan string) {
	ch := make(chan string, 16)
	return func(p string) { ch <- p }, ch
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("gave up waiting for %s", what)
		panic("unreachable")
	}
}

func TestHeaderTimeout(t *testing.T) {
	onRequest, requested := signal()
	onAbort, aborted := signal()
	up := upstreamtest.Start(upstreamtest.Config{HeaderDelay: time.Hour, OnRequest: onRequest, OnAbort: onAbort})
	defer up.Close()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	e := newEngine(t, up, func(c *Config) { c.Clock, c.HeaderTimeout = clk, 30*time.Second })

	errc := make(chan error, 1)
	go func() {
		tk := task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: []task.Message{{Role: "user", Content: "hi"}}}
		_, err := e.Generate(context.Background(), &tk, (&collected{}).emit)
		errc <- err
	}()
	wait(t, requested, "the upstream request")
	clk.Advance(29 * time.Second)
	select {
	case err := <-errc:
		t.Fatalf("returned before the header timeout: %v", err)
	default:
	}
	clk.Advance(time.Second)
	checkAPIErr(t, wait(t, errc, "Generate"), 504, "upstream_timeout")
	wait(t, aborted, "the upstream to see the abort")
}

func TestIdleTimeout(t *testing.T) {
	onAbort, aborted := signal()
	up := upstreamtest.Start(upstreamtest.Config{TokenDelay: time.Hour, OnAbort: onAbort})
	defer up.Close()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	e := newEngine(t, up, func(c *Config) { c.Clock, c.IdleTimeout = clk, 20*time.Second })

	first := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		tk := task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "a long story"}
		_, err := e.Generate(context.Background(), &tk, func(task.Delta) error {
			first <- struct{}{}
			return nil
		})
		errc <- err
	}()
	wait(t, first, "the first delta")
	clk.Advance(20 * time.Second)
	checkAPIErr(t, wait(t, errc, "Generate"), 504, "upstream_timeout")
	wait(t, aborted, "the upstream to see the abort")
}

func TestCancelMidStreamAbortsUpstream(t *testing.T) {
	errGone := errors.New("client went away")
	tests := []struct {
		name    string
		stop    func(cancel context.CancelFunc) error // what happens at the first delta
		wantErr error
	}{
		{"context cancelled", func(cancel context.CancelFunc) error { cancel(); return nil }, context.Canceled},
		{"emit fails", func(context.CancelFunc) error { return errGone }, errGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			onAbort, aborted := signal()
			up := upstreamtest.Start(upstreamtest.Config{TokenDelay: time.Hour, OnAbort: onAbort})
			defer up.Close()
			e := newEngine(t, up, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tk := task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: []task.Message{{Role: "user", Content: "hi"}}}
			_, err := e.Generate(ctx, &tk, func(task.Delta) error { return tc.stop(cancel) })
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			wait(t, aborted, "the upstream to see the abort")
		})
	}
}

func TestEmbed(t *testing.T) {
	inputs := []string{"first input", "second", "the third input here"}
	tests := []struct {
		name       string
		omitUsage  bool
		model      string
		wantTokens int
		wantStatus int
	}{
		{name: "vectors in input order", model: "mock-embed", wantTokens: 7},
		{name: "omitted usage is zero", model: "mock-embed", omitUsage: true, wantTokens: 0},
		{name: "unknown model", model: "nope", wantStatus: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.Start(upstreamtest.Config{OmitUsage: tc.omitUsage, EmbeddingDim: 16})
			defer up.Close()
			e := newEngine(t, up, nil)
			res, err := e.Embed(context.Background(), tc.model, inputs)
			if tc.wantStatus != 0 {
				checkAPIErr(t, err, tc.wantStatus, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := make([][]float32, len(inputs))
			for i, in := range inputs {
				want[i] = upstreamtest.Embedding(in, 16)
			}
			if diff := cmp.Diff(task.EmbedResult{Vectors: want, PromptTokens: tc.wantTokens}, res); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestMalformedUpstream drives the engine against hand-written responses
// that no well-behaved server sends.
func TestMalformedUpstream(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		ctype      string
		embed      bool
		wantStatus int
	}{
		{name: "stream ends early", body: "data: {\"choices\":[{\"index\":0,\"text\":\"a\"}]}\n\n", wantStatus: 502},
		{name: "bad JSON event", body: "data: {nope\n\n", wantStatus: 502},
		{name: "oversized event", body: "data: " + strings.Repeat("x", 5000) + "\n\n", wantStatus: 502},
		{name: "keepalives and CRLF are fine", body: ": keepalive\r\n\r\nevent: x\r\ndata: {\"choices\":[{\"index\":0,\"text\":\"ok\",\"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\r\n\r\n"},
		{name: "wrong embedding count", embed: true, ctype: "application/json",
			body: `{"data":[{"index":0,"embedding":[1,2]}],"usage":{"prompt_tokens":2}}`, wantStatus: 502},
		{name: "ragged embeddings", embed: true, ctype: "application/json",
			body: `{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[1]}]}`, wantStatus: 502},
		{name: "base64 embeddings", embed: true, ctype: "application/json",
			body: `{"data":[{"index":1,"embedding":"AACAPw=="},{"index":0,"embedding":"AAAAQA=="}],"usage":{"prompt_tokens":2}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ct := tc.ctype
				if ct == "" {
					ct = "text/event-stream"
				}
				w.Header().Set("Content-Type", ct)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			e, err := New(Config{BaseURL: srv.URL + "/v1", MetricsURL: MetricsOff, MaxEventBytes: 4096, Logger: quietLogger(),
				Models: []task.ModelVersion{{Name: "m", Digest: digest}}})
			if err != nil {
				t.Fatal(err)
			}
			if tc.embed {
				res, err := e.Embed(context.Background(), "m", []string{"a", "b"})
				if tc.wantStatus != 0 {
					checkAPIErr(t, err, tc.wantStatus, "upstream_error")
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([][]float32{{2}, {1}}, res.Vectors); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				return
			}
			var got collected
			res, err := e.Generate(context.Background(), &task.Task{Kind: task.KindCompletion, Model: "m", Prompt: "p"}, got.emit)
			if tc.wantStatus != 0 {
				checkAPIErr(t, err, tc.wantStatus, "upstream_error")
				return
			}
			if err != nil || got.text != "ok" || res.FinishReason != "stop" {
				t.Fatalf("got %q %+v %v", got.text, res, err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{BaseURL: "http://127.0.0.1:8000/v1", Models: []task.ModelVersion{{Name: "m", Digest: digest}}}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"good", func(*Config) {}, ""},
		{"no scheme", func(c *Config) { c.BaseURL = "127.0.0.1:8000" }, "base_url"},
		{"bad metrics url", func(c *Config) { c.MetricsURL = "ftp://x" }, "metrics_url"},
		{"metrics off", func(c *Config) { c.MetricsURL = MetricsOff }, ""},
		{"no models", func(c *Config) { c.Models = nil }, "models"},
		{"bad digest", func(c *Config) { c.Models[0].Digest = "ABC" }, "models[0].digest"},
		{"duplicate model", func(c *Config) { c.Models = append(c.Models, c.Models[0]) }, "listed twice"},
		{"mapping of unknown model", func(c *Config) { c.UpstreamModels = map[string]string{"x": "y"} }, "upstream_models"},
		{"negative timeout", func(c *Config) { c.IdleTimeout = -1 }, "idle_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestAPIKey(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{APIKey: "sk-upstream"})
	defer up.Close()
	tk := task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "x"}
	tests := []struct {
		name       string
		key        string
		wantStatus int
	}{
		{"right key", "sk-upstream", 0},
		{"wrong key is the worker's fault", "sk-wrong", 502},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, up, func(c *Config) { c.APIKey = tc.key })
			_, err := e.Generate(context.Background(), &tk, (&collected{}).emit)
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkAPIErr(t, err, tc.wantStatus, "upstream_error")
		})
	}
}

func TestUsageEstimatedLoggedOnceAtWarn(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{OmitUsage: true})
	defer up.Close()
	var logs strings.Builder
	e := newEngine(t, up, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tk := task.Task{RequestID: "req-1", Kind: task.KindCompletion, Model: "mock-llm", Prompt: "x"}
	for i := 0; i < 3; i++ {
		if _, err := e.Generate(context.Background(), &tk, (&collected{}).emit); err != nil {
			t.Fatal(err)
		}
	}
	if w, d := strings.Count(logs.String(), "level=WARN"), strings.Count(logs.String(), "level=DEBUG"); w != 1 || d != 2 {
		t.Fatalf("%d warn and %d debug lines, want 1 and 2:\n%s", w, d, logs.String())
	}
	if !strings.Contains(logs.String(), "usage_estimated=true") || !strings.Contains(logs.String(), "request_id=req-1") {
		t.Fatalf("log lacks the marker or request id:\n%s", logs.String())
	}
}

func TestConnectionsArePooled(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	e := newEngine(t, up, nil)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		tk := task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: []task.Message{{Role: "user", Content: "hi"}}}
		if _, err := e.Generate(ctx, &tk, (&collected{}).emit); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Embed(ctx, "mock-embed", []string{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := up.Stats().Conns; n != 1 {
		t.Fatalf("%d connections for 10 sequential requests, want 1", n)
	}
}

func TestConfigFromYAML(t *testing.T) {
	src := `
base_url: http://127.0.0.1:8000/v1
api_key: sk-local
models:
  - name: llama3-8b
    digest: ` + digest + `
upstream_models:
  llama3-8b: meta-llama/Meta-Llama-3-8B-Instruct
header_timeout: 30s
idle_timeout: 2m
metrics_ttl: 250ms
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.HeaderTimeout != 30*time.Second || c.IdleTimeout != 2*time.Minute || c.MetricsTTL != 250*time.Millisecond ||
		c.UpstreamModels["llama3-8b"] != "meta-llama/Meta-Llama-3-8B-Instruct" || c.Models[0].Digest != digest {
		t.Fatalf("decoded %+v", c)
	}
}

// TestTraceContextPropagated checks that the request's W3C trace context
// reaches the upstream, so its spans join the request's trace.
func TestTraceContextPropagated(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	target, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	target.Path = "" // the engine's requests already carry /v1
	got := make(chan string, 4)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"request in a trace", obs.ContextWithTraceparent(context.Background(), tp), tp},
		{"no trace", context.Background(), ""},
	}
	e := newEngine(t, up, func(c *Config) { c.BaseURL = front.URL + "/v1" })
	tk := task.Task{Kind: task.KindCompletion, Model: "mock-llm", Prompt: "x"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.Generate(tc.ctx, &tk, (&collected{}).emit); err != nil {
				t.Fatal(err)
			}
			if h := <-got; h != tc.want {
				t.Errorf("upstream traceparent = %q, want %q", h, tc.want)
			}
		})
	}
}

// TestGenerateWholeMalformed: a non-streamed answer is validated like a
// stream: no choice 0, an error object, bad JSON or an oversized body fail
// the task with the right status; negative usage is not believed.
func TestGenerateWholeMalformed(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantText   string
		wantTokens int
	}{
		{"malformed JSON", `{"choices":[`, 502, "", 0},
		{"no choice 0", `{"choices":[{"index":1,"message":{"content":"x"}}]}`, 502, "", 0},
		{"no choices", `{"choices":[]}`, 502, "", 0},
		{"error object", `{"error":{"message":"engine dead","type":"InternalServerError","code":500}}`, 502, "", 0},
		{"too large", `{"choices":[{"index":0,"message":{"content":"` + strings.Repeat("x", 300) + `"}}]}`, 502, "", 0},
		{"negative usage estimated", `{"choices":[{"index":0,"message":{"content":"abcdefgh"},"finish_reason":"stop"}],"usage":{"prompt_tokens":-1,"completion_tokens":-5}}`, 0, "abcdefgh", 2},
		{"null content", `{"choices":[{"index":0,"message":{"content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":0}}`, 0, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			e, err := New(Config{BaseURL: srv.URL + "/v1", Models: []task.ModelVersion{{Name: "m", Digest: digest}},
				MaxBodyBytes: 256, MetricsURL: MetricsOff, Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			tk := task.Task{Kind: task.KindChat, Model: "m", Messages: []task.Message{{Role: "user", Content: "hi"}},
				Deadline: time.Now().Add(time.Hour)}
			var got collected
			res, err := e.Generate(context.Background(), &tk, got.emit)
			if tc.wantStatus != 0 {
				checkAPIErr(t, err, tc.wantStatus, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.text != tc.wantText || res.CompletionTokens != tc.wantTokens || got.tokens != tc.wantTokens {
				t.Errorf("text %q, %d tokens (%d in deltas), want %q, %d", got.text, res.CompletionTokens, got.tokens, tc.wantText, tc.wantTokens)
			}
		})
	}
}

// TestWatchdog: a reset pushes the deadline back to a full window after it;
// stop disarms it.
func TestWatchdog(t *testing.T) {
	tests := []struct {
		name  string
		steps []string // "advance:<d>", "reset", "stop"
		fired bool
	}{
		{"fires after the window", []string{"advance:10s"}, true},
		{"not before", []string{"advance:9s"}, false},
		{"reset extends", []string{"advance:6s", "reset", "advance:6s"}, false},
		{"fires a window after the reset", []string{"advance:6s", "reset", "advance:6s", "advance:4s"}, true},
		{"many resets", []string{"advance:5s", "reset", "advance:5s", "reset", "advance:5s", "reset", "advance:9s"}, false},
		{"stopped", []string{"advance:5s", "stop", "advance:20s"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Unix(1_700_000_000, 0))
			fired := 0
			w := newWatchdog(clk, 10*time.Second, func() { fired++ })
			for _, s := range tc.steps {
				switch {
				case s == "reset":
					w.reset()
				case s == "stop":
					w.stop()
				default:
					d, err := time.ParseDuration(strings.TrimPrefix(s, "advance:"))
					if err != nil {
						t.Fatal(err)
					}
					clk.Advance(d)
				}
			}
			if (fired > 0) != tc.fired || fired > 1 {
				t.Errorf("fired %d times, want fired=%v", fired, tc.fired)
			}
		})
	}
}

// TestDeltaMore: a streamed delta whose next event came in with it is
// marked More (the worker may send the two in one write); the last one
// before the upstream pauses is not.
func TestDeltaMore(t *testing.T) {
	chunk := func(s string) string {
		return `data: {"choices":[{"index":0,"delta":{"content":"` + s + `"}}]}` + "\n\n"
	}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk("a")+chunk("b")+chunk("c"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(hangGuard):
		}
		io.WriteString(w, chunk("d")+`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":4}}`+"\n\ndata: [DONE]\n\n")
	}))
	defer srv.Close()
	e, err := New(Config{BaseURL: srv.URL + "/v1", Models: []task.ModelVersion{{Name: "m", Digest: digest}}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var got []string
	tk := &task.Task{Kind: task.KindChat, Model: "m", Stream: true, Messages: []task.Message{{Role: "user", Content: "hi"}}}
	res, err := e.Generate(context.Background(), tk, func(d task.Delta) error {
		got = append(got, fmt.Sprintf("%s:%v", d.Text, d.More))
		if d.Text == "c" {
			close(release)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "a:true b:true c:false d:true"; strings.Join(got, " ") != want || res.CompletionTokens != 4 {
		t.Fatalf("deltas %q (usage %+v), want %q", strings.Join(got, " "), res, want)
	}
}

// An upstream engine declares every capability unless told otherwise; a
// model's own list wins; an unknown name is a config error.
func TestCapabilitiesDeclared(t *testing.T) {
	none := []task.Capability{}
	two := []task.Capability{task.CapTools, task.CapJSONObject}
	bad := []task.Capability{"time_travel"}
	cases := []struct {
		name  string
		caps  *[]task.Capability
		model []task.Capability
		want  []task.Capability
		err   bool
	}{
		{"default all", nil, nil, task.KnownCapabilities, false},
		{"none", &none, nil, nil, false},
		{"list", &two, nil, two, false},
		{"model's own", nil, []task.Capability{task.CapN}, []task.Capability{task.CapN}, false},
		{"unknown", &bad, nil, nil, true},
		{"unknown on model", nil, bad, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := New(Config{BaseURL: "http://127.0.0.1:1/v1", MetricsURL: MetricsOff, Capabilities: c.caps,
				Models: []task.ModelVersion{{Name: "m", Digest: strings.Repeat("ab", 32), Capabilities: c.model}}, Logger: quietLogger()})
			if c.err {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if got := e.Models()[0].Capabilities; task.CapabilityList(got) != task.CapabilityList(c.want) {
				t.Errorf("capabilities %v, want %v", got, c.want)
			}
		})
	}
}
