package sim

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func TestTokenize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"words", "Hello world", []string{"Hello", " world"}},
		{"punctuation", "Hi, you!", []string{"Hi", ",", " you", "!"}},
		{"long word splits every 8 letters", "internationalization", []string{"internat", "ionaliza", "tion"}},
		{"digits split every 3", "1234567", []string{"123", "456", "7"}},
		{"trailing space is a token", "a  ", []string{"a", "  "}},
		{"only spaces", "   ", []string{"   "}},
		{"newline joins next", "a\nb", []string{"a", "\nb"}},
		{"unicode letters", "héllo 世界", []string{"héllo", " 世界"}},
		{"emoji", "ok👍", []string{"ok", "👍"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Tokenize(tc.in)
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("Tokenize(%q) (-got +want):\n%s", tc.in, diff)
			}
			if n := CountTokens(tc.in); n != len(tc.want) {
				t.Errorf("CountTokens(%q) = %d, want %d", tc.in, n, len(tc.want))
			}
		})
	}
}

func FuzzTokenize(f *testing.F) {
	for _, s := range []string{"", "Hello world", "internationalization 1234567", "a  ", "héllo 世界👍", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		toks := Tokenize(s)
		if strings.Join(toks, "") != s {
			t.Fatalf("tokens do not concatenate back to the input")
		}
		if CountTokens(s) != len(toks) {
			t.Fatalf("CountTokens = %d, len(Tokenize) = %d", CountTokens(s), len(toks))
		}
		for _, tok := range toks {
			if tok == "" {
				t.Fatalf("empty token")
			}
		}
	})
}

func TestVocabularyWordsAreOneToken(t *testing.T) {
	for _, w := range vocabulary {
		if n := CountTokens(" " + strings.ToUpper(w[:1]) + w[1:]); n != 1 {
			t.Errorf("%q is %d tokens", w, n)
		}
	}
}

func TestProfilesValid(t *testing.T) {
	for name, p := range Profiles() {
		if p.Name != name {
			t.Errorf("profile %q is named %q", name, p.Name)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("profile %q: %v", name, err)
		}
	}
}

func newTestEngine(t *testing.T, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{Profile: Profiles()["sim-tiny"], Seed: 7, NoDelay: true}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func generate(t *testing.T, e *Engine, tk *task.Task) (string, int, task.Result, error) {
	t.Helper()
	var sb strings.Builder
	deltaTokens := 0
	res, err := e.Generate(context.Background(), tk, func(d task.Delta) error {
		sb.WriteString(d.Text)
		deltaTokens += d.Tokens
		return nil
	})
	return sb.String(), deltaTokens, res, err
}

func TestGenerate(t *testing.T) {
	seed := int64(42)
	chat := []task.Message{{Role: "user", Content: "Tell me a story."}}
	tests := []struct {
		name       string
		task       task.Task
		wantFinish string
		wantMax    int // completion tokens at most (0: no check)
		wantExact  int // completion tokens exactly (0: no check)
	}{
		{"chat", task.Task{Kind: task.KindChat, Model: "sim-tiny", Messages: chat}, "stop", maxNatural, 0},
		{"completion", task.Task{Kind: task.KindCompletion, Model: "sim-tiny", Prompt: "Once upon a time"}, "stop", maxNatural, 0},
		{"max tokens", task.Task{Kind: task.KindChat, Model: "sim-tiny", Messages: chat, MaxTokens: 5}, "length", 0, 5},
		{"seeded", task.Task{Kind: task.KindChat, Model: "sim-tiny", Messages: chat, Seed: &seed}, "stop", maxNatural, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, nil)
			text, deltaTokens, res, err := generate(t, e, &tc.task)
			if err != nil {
				t.Fatal(err)
			}
			if res.FinishReason != tc.wantFinish {
				t.Errorf("finish = %q, want %q", res.FinishReason, tc.wantFinish)
			}
			if deltaTokens != res.CompletionTokens || CountTokens(text) != res.CompletionTokens {
				t.Errorf("completion tokens %d, deltas %d, tokenizer %d: must agree", res.CompletionTokens, deltaTokens, CountTokens(text))
			}
			if tc.wantExact > 0 && res.CompletionTokens != tc.wantExact {
				t.Errorf("completion tokens = %d, want %d", res.CompletionTokens, tc.wantExact)
			}
			if tc.wantMax > 0 && (res.CompletionTokens < minNatural || res.CompletionTokens > tc.wantMax) {
				t.Errorf("completion tokens = %d, want in [%d, %d]", res.CompletionTokens, minNatural, tc.wantMax)
			}
			wantPrompt := CountTokens(tc.task.Prompt)
			if tc.task.Kind == task.KindChat {
				wantPrompt = CountChat(tc.task.Messages)
			}
			if res.PromptTokens != wantPrompt {
				t.Errorf("prompt tokens = %d, want %d", res.PromptTokens, wantPrompt)
			}
			// Same request, fresh engine with the same seed: same text.
			again, _, _, err := generate(t, newTestEngine(t, nil), &tc.task)
			if err != nil || again != text {
				t.Errorf("not deterministic: %q vs %q (%v)", text, again, err)
			}
		})
	}
}

func TestGenerateStop(t *testing.T) {
	e := newTestEngine(t, nil)
	tk := task.Task{Kind: task.KindCompletion, Model: "sim-tiny", Prompt: "x"}
	full, _, _, err := generate(t, e, &tk)
	if err != nil {
		t.Fatal(err)
	}
	words := strings.Fields(full)
	stop := words[len(words)/2]
	tk.Stop = []string{stop}
	text, _, res, err := generate(t, e, &tk)
	if err != nil {
		t.Fatal(err)
	}
	if want := full[:strings.Index(full, stop)]; text != want {
		t.Errorf("text = %q, want %q", text, want)
	}
	if res.FinishReason != "stop" {
		t.Errorf("finish = %q", res.FinishReason)
	}
}

func TestGenerateRefusals(t *testing.T) {
	long := strings.Repeat("word ", 3000)
	tests := []struct {
		name   string
		task   task.Task
		status int
		code   string
	}{
		{"unknown model", task.Task{Kind: task.KindChat, Model: "other", Messages: []task.Message{{Role: "user", Content: "x"}}}, http.StatusNotFound, "model_not_found"},
		{"prompt exceeds context", task.Task{Kind: task.KindCompletion, Model: "sim-tiny", Prompt: long}, http.StatusBadRequest, "context_length_exceeded"},
		{"embedding kind", task.Task{Kind: task.KindEmbedding, Model: "sim-tiny"}, http.StatusBadRequest, "unsupported_kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := generate(t, newTestEngine(t, nil), &tc.task)
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("err = %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
}

func TestQueueFull(t *testing.T) {
	p := Profiles()["sim-tiny"]
	p.MaxNumSeqs, p.MaxWaiting = 1, 0
	e := newTestEngine(t, func(c *Config) { c.Profile = p })
	if err := e.admit(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	err := e.admit(context.Background(), 10)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.RetryAfter <= 0 {
		t.Fatalf("second admit: %v, want 429 with Retry-After", err)
	}
	load, _ := e.Load(context.Background())
	if load.Running != 1 || load.KVCacheUsage <= 0 {
		t.Errorf("load = %+v", load)
	}
	e.leave(10)
	if err := e.admit(context.Background(), 10); err != nil {
		t.Fatalf("admit after leave: %v", err)
	}
}

func TestEmbed(t *testing.T) {
	e := newTestEngine(t, nil)
	inputs := []string{"hello world", "another input", "hello world"}
	res, err := e.Embed(context.Background(), "sim-tiny", inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Vectors) != 3 || len(res.InputTokens) != 3 {
		t.Fatalf("got %d vectors, %d counts", len(res.Vectors), len(res.InputTokens))
	}
	total := 0
	for i, v := range res.Vectors {
		if len(v) != e.prof.EmbeddingDim {
			t.Errorf("vector %d has dim %d", i, len(v))
		}
		norm := 0.0
		for _, f := range v {
			norm += float64(f) * float64(f)
		}
		if math.Abs(norm-1) > 1e-5 {
			t.Errorf("vector %d norm² = %v", i, norm)
		}
		if res.InputTokens[i] != CountTokens(inputs[i]) {
			t.Errorf("input %d tokens = %d", i, res.InputTokens[i])
		}
		total += res.InputTokens[i]
	}
	if total != res.PromptTokens {
		t.Errorf("prompt tokens %d != sum %d", res.PromptTokens, total)
	}
	if !cmp.Equal(res.Vectors[0], res.Vectors[2]) || cmp.Equal(res.Vectors[0], res.Vectors[1]) {
		t.Error("equal inputs must embed equally, different ones differently")
	}
}

func TestLoadFactor(t *testing.T) {
	p := Profile{MaxNumSeqs: 11, TimeFactorUnderLoad: 2}
	tests := []struct {
		name    string
		running int
		want    float64
	}{
		{"idle", 0, 1}, {"one", 1, 1}, {"half", 6, 1.5}, {"full", 11, 2}, {"over", 50, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LoadFactor(p, tc.running); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("LoadFactor(%d) = %v, want %v", tc.running, got, tc.want)
			}
		})
	}
}

func TestJitterBounded(t *testing.T) {
	p := Profile{JitterStdDev: 0.5, JitterMax: 0.2}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		if j := Jitter(p, rng); j < 0.8 || j > 1.2 {
			t.Fatalf("jitter %v outside [0.8, 1.2]", j)
		}
	}
}

func TestSlowdownAfter(t *testing.T) {
	e := newTestEngine(t, func(c *Config) { c.SlowdownAfter, c.SlowdownFactor = 2, 3 })
	tk := task.Task{Kind: task.KindCompletion, Model: "sim-tiny", Prompt: "x", MaxTokens: 1}
	slowdown := func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.slowdown
	}
	for i, want := range []float64{1, 3} {
		if _, _, _, err := generate(t, e, &tk); err != nil {
			t.Fatal(err)
		}
		if got := slowdown(); got != want {
			t.Errorf("after %d requests slowdown = %v, want %v", i+1, got, want)
		}
	}
	e.SetSlowdown(1)
	if slowdown() != 1 {
		t.Error("SetSlowdown(1) did not reset")
	}
}

func TestModelDigestStable(t *testing.T) {
	p := Profiles()["llama3-8b-h100"]
	d1 := ModelDigest("llama3-8b", p)
	p.InterTokenLatency++
	if d1 == ModelDigest("llama3-8b", p) || len(d1) != 64 {
		t.Errorf("digest must be 64 hex and change with the profile: %s", d1)
	}
}

// recordingClock fires every timer at once and records its duration.
type recordingClock struct {
	mu        sync.Mutex
	durations []time.Duration
}

func (c *recordingClock) Now() time.Time { return time.Unix(0, 0) }

func (c *recordingClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	c.durations = append(c.durations, d)
	c.mu.Unlock()
	f()
	return stoppedTimer{}
}

type stoppedTimer struct{}

func (stoppedTimer) Stop() bool { return false }

func TestLatencyModel(t *testing.T) {
	p := Profiles()["llama3-8b-h100"]
	p.JitterStdDev, p.JitterMax = 0, 0
	clk := &recordingClock{}
	e := newTestEngine(t, func(c *Config) { c.Profile, c.NoDelay, c.Clock, c.TimeScale = p, false, clk, 0.5 })
	tk := task.Task{Kind: task.KindCompletion, Model: "llama3-8b", Prompt: "a b c", MaxTokens: 4}
	if _, _, _, err := generate(t, e, &tk); err != nil {
		t.Fatal(err)
	}
	ttft := (p.PrefillOverhead + 3*p.PrefillPerToken) / 2
	itl := p.InterTokenLatency / 2
	want := []time.Duration{ttft, itl, itl, itl}
	if diff := cmp.Diff(clk.durations, want); diff != "" {
		t.Errorf("simulated delays (-got +want):\n%s", diff)
	}

	// Three times slower after SetSlowdown(3).
	clk.durations = nil
	e.SetSlowdown(3)
	if _, _, _, err := generate(t, e, &tk); err != nil {
		t.Fatal(err)
	}
	if got := clk.durations[0]; got != 3*ttft {
		t.Errorf("slowed TTFT = %v, want %v", got, 3*ttft)
	}
}
