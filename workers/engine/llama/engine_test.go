package llama

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

func generateText(t *testing.T, e *Engine, tk *task.Task) (string, task.Result) {
	t.Helper()
	var sb strings.Builder
	res, err := e.Generate(t.Context(), tk, func(d task.Delta) error { sb.WriteString(d.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return sb.String(), res
}

func wantStatus(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("err = %v, want status %d code %q", err, status, code)
	}
}

func TestModels(t *testing.T) {
	e := openTestEngine(t, Options{})
	got := e.Models()
	want := []task.ModelVersion{{Name: "stories260K", ContextLength: 512, Embeddings: true, OwnedBy: "tollgate", Determinism: task.DeterminismExact,
		Capabilities: []task.Capability{task.CapJSONObject, task.CapJSONSchema},
		Digest:       manifestDigest([]manifestFile{{"tok512.bin", mustRead(t, "tok512.bin")}, {"stories260K.bin", mustRead(t, "stories260K.bin")}})}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Models (-got +want):\n%s", diff)
	}
}

func TestManifestDigestFormat(t *testing.T) {
	got := manifestDigest([]manifestFile{{"b", []byte("x")}, {"a", nil}})
	manifest := "tollgate-manifest-v1\n" +
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 a\n" +
		"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 1 b\n"
	if got != sha256Hex(manifest) {
		t.Errorf("manifestDigest = %s, want sha256 of %q", got, manifest)
	}
	// The same digest as workers.ManifestDigest of a directory holding
	// just the two files.
	dir := t.TempDir()
	for _, f := range []string{"stories260K.bin", "tok512.bin"} {
		if err := os.WriteFile(filepath.Join(dir, f), mustRead(t, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := workers.ManifestDigest(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := openTestEngine(t, Options{})
	if got := e.Models()[0].Digest; got != want {
		t.Errorf("engine digest %s, workers.ManifestDigest %s", got, want)
	}
}

func TestGenerateValidation(t *testing.T) {
	e := openTestEngine(t, Options{})
	tests := []struct {
		name   string
		task   task.Task
		status int
		code   string
	}{
		{"unknown model", task.Task{Kind: task.KindCompletion, Model: "gpt-4"}, http.StatusNotFound, "model_not_found"},
		{"negative max_tokens", task.Task{Kind: task.KindCompletion, MaxTokens: -1}, http.StatusBadRequest, "invalid_value"},
		{"temperature too high", task.Task{Kind: task.KindCompletion, Temperature: 3}, http.StatusBadRequest, "invalid_value"},
		{"NaN temperature", task.Task{Kind: task.KindCompletion, Temperature: math.NaN()}, http.StatusBadRequest, "invalid_value"},
		{"top_p above one", task.Task{Kind: task.KindCompletion, TopP: 1.5}, http.StatusBadRequest, "invalid_value"},
		{"empty chat", task.Task{Kind: task.KindChat}, http.StatusBadRequest, "invalid_value"},
		{"embedding kind", task.Task{Kind: task.KindEmbedding}, http.StatusBadRequest, "invalid_value"},
		{"prompt longer than the context", task.Task{Kind: task.KindCompletion, Prompt: strings.Repeat("a b ", 300)}, http.StatusBadRequest, "context_length_exceeded"},
		{"prompt text far too long", task.Task{Kind: task.KindCompletion, Prompt: strings.Repeat("x", 1<<20)}, http.StatusBadRequest, "context_length_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Generate(t.Context(), &tt.task, func(task.Delta) error { return nil })
			wantStatus(t, err, tt.status, tt.code)
		})
	}
}

func TestGenerateFinish(t *testing.T) {
	e := openTestEngine(t, Options{})
	seed := int64(7)
	tests := []struct {
		name       string
		task       task.Task
		wantFinish string
		wantTokens int // -1: any
	}{
		{"max_tokens", task.Task{Kind: task.KindCompletion, Prompt: "Once upon a time", MaxTokens: 5}, "length", 5},
		{"context end", task.Task{Kind: task.KindCompletion, Prompt: strings.Repeat("Once upon a time. ", 101)}, "length", 512 - 507 + 1},
		{"prompt fills the context", task.Task{Kind: task.KindCompletion, Prompt: strings.Repeat("Once upon a time. ", 102)}, "length", 1},
		{"stop sequence", task.Task{Kind: task.KindCompletion, Prompt: "Once upon a time", Stop: []string{"Lily"}}, "stop", -1},
		{"sampled with seed", task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: 30, Temperature: 0.9, TopP: 0.9, Seed: &seed}, "length", 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, res := generateText(t, e, &tt.task)
			if res.FinishReason != tt.wantFinish {
				t.Errorf("finish = %q, want %q", res.FinishReason, tt.wantFinish)
			}
			if tt.wantTokens >= 0 && res.CompletionTokens != tt.wantTokens {
				t.Errorf("completion tokens = %d, want %d", res.CompletionTokens, tt.wantTokens)
			}
			if res.PromptTokens != len(e.tok.Encode(tt.task.Prompt, true)) {
				t.Errorf("prompt tokens = %d", res.PromptTokens)
			}
			for _, s := range tt.task.Stop {
				if strings.Contains(text, s) {
					t.Errorf("text %q contains stop %q", text, s)
				}
			}
		})
	}
}

func TestSeedReproduces(t *testing.T) {
	e := openTestEngine(t, Options{})
	tk := func(seed int64) *task.Task {
		return &task.Task{Kind: task.KindCompletion, Prompt: "Lily", MaxTokens: 40, Temperature: 1, Seed: &seed}
	}
	a, _ := generateText(t, e, tk(42))
	b, _ := generateText(t, e, tk(42))
	c, _ := generateText(t, e, tk(43))
	if a != b {
		t.Errorf("same seed, different text:\n%q\n%q", a, b)
	}
	if a == c {
		t.Errorf("seeds 42 and 43 gave the same 40 sampled tokens: %q", a)
	}
}

func TestChat(t *testing.T) {
	got := ChatPrompt([]task.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"},
		{Role: "assistant", Content: "Hello"}, {Role: "user", Content: "Tell a story"}})
	want := "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Tell a story\nAssistant:"
	if got != want {
		t.Errorf("ChatPrompt = %q, want %q", got, want)
	}
	e := openTestEngine(t, Options{})
	text, res := generateText(t, e, &task.Task{Kind: task.KindChat, MaxTokens: 20,
		Messages: []task.Message{{Role: "user", Content: "Tell me a story"}}})
	if res.PromptTokens != len(e.tok.Encode("User: Tell me a story\nAssistant:", true)) || text == "" {
		t.Errorf("chat: %q, %+v", text, res)
	}
}

func TestCancelFreesSequence(t *testing.T) {
	// One sequence slot: the second request can only run if the first,
	// cancelled while running to the end of the context, was freed.
	e := openTestEngine(t, Options{MaxNumSeqs: 1})
	ctx, cancel := context.WithCancel(t.Context())
	_, err := e.Generate(ctx, &task.Task{Kind: task.KindCompletion}, func(task.Delta) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	text, res := generateText(t, e, &task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: 3})
	if res.CompletionTokens != 3 || text == "" {
		t.Errorf("second request: %q %+v", text, res)
	}
	// An emit error ends the stream the same way.
	boom := errors.New("client gone")
	_, err = e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion}, func(task.Delta) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the emit error", err)
	}
}

func TestQueueFullAndKVBudget(t *testing.T) {
	hold := make(chan struct{})
	inStep := make(chan struct{}, 1)
	var once sync.Once
	kvPerTok := int64(5 * 2 * 32 * 4)
	e, err := open(modelDir(t), Options{MaxNumSeqs: 4, MaxQueue: 1, KVCacheBytes: 100 * kvPerTok}, func() {
		once.Do(func() { inStep <- struct{}{}; <-hold })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })

	run := func(maxTokens int) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: maxTokens},
				func(task.Delta) error { return nil })
			done <- err
		}()
		return done
	}
	first := run(60) // reserves 2+59 = 61 positions (keys rounded up to 64) of the 100
	<-inStep         // the loop is now held inside its first step
	// The second cannot fit beside the first and waits; the queue is now
	// full, so a third is shed at once.
	r2, err := e.newRequest(&task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: 60})
	if err != nil {
		t.Fatal(err)
	}
	second := e.newSequence("second", r2.prompt, false, r2.maxNew, newSampler(512, 0, 0, 1))
	if err := e.enqueue(second); err != nil {
		t.Fatal(err)
	}
	if l, _ := e.Load(t.Context()); !reflect.DeepEqual(l, task.Load{Waiting: 1, Running: 1, KVCacheUsage: 0.625, Source: "llama"}) {
		t.Errorf("load = %+v", l)
	}
	_, err = e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: 5},
		func(task.Delta) error { return nil })
	wantStatus(t, err, http.StatusTooManyRequests, "engine_queue_full")
	// A request that could never fit the budget is refused, not queued.
	_, err = e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion, Prompt: "Once", MaxTokens: 200},
		func(task.Delta) error { return nil })
	wantStatus(t, err, http.StatusBadRequest, "context_length_exceeded")
	close(hold)
	if err := <-first; err != nil {
		t.Error(err)
	}
	for ev := range second.out {
		if ev.isFinal {
			if ev.err != nil || ev.finish != "length" {
				t.Errorf("second request ended with %+v", ev)
			}
			break
		}
	}
}

func TestCloseFailsRequests(t *testing.T) {
	e, err := Open(modelDir(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	_, err = e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion}, func(task.Delta) error { return nil })
	wantStatus(t, err, http.StatusServiceUnavailable, "engine_closed")
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestEmbed(t *testing.T) {
	e := openTestEngine(t, Options{})
	inputs := []string{"Once upon a time", "The cat sat on the mat.", "", "Once upon a time"}
	res, err := e.Embed(t.Context(), "stories260K", inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Vectors) != len(inputs) {
		t.Fatalf("%d vectors for %d inputs", len(res.Vectors), len(inputs))
	}
	wantTokens := 0
	for i, in := range inputs {
		n := len(e.tok.Encode(in, true))
		wantTokens += n
		if res.InputTokens[i] != n {
			t.Errorf("input %d: %d tokens, want %d", i, res.InputTokens[i], n)
		}
		var norm float64
		for _, v := range res.Vectors[i] {
			norm += float64(v) * float64(v)
		}
		if len(res.Vectors[i]) != 64 || math.Abs(norm-1) > 1e-5 {
			t.Errorf("vector %d: len %d, norm² %g", i, len(res.Vectors[i]), norm)
		}
	}
	if res.PromptTokens != wantTokens {
		t.Errorf("prompt tokens = %d, want %d", res.PromptTokens, wantTokens)
	}
	if diff := cmp.Diff(res.Vectors[0], res.Vectors[3]); diff != "" {
		t.Errorf("same input, different vectors in one batch")
	}
	if cmp.Equal(res.Vectors[0], res.Vectors[1]) {
		t.Errorf("different inputs, same vector")
	}
	alone, err := e.Embed(t.Context(), "", inputs[1:2])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(alone.Vectors[0], res.Vectors[1]); diff != "" {
		t.Errorf("batched and lone embeddings differ")
	}
	_, err = e.Embed(t.Context(), "other", inputs)
	wantStatus(t, err, http.StatusNotFound, "model_not_found")
	_, err = e.Embed(t.Context(), "", nil)
	wantStatus(t, err, http.StatusBadRequest, "invalid_value")
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestFiles(t *testing.T) {
	dir := modelDir(t)
	ckpt, tok, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(ckpt) != "stories260K.bin" || filepath.Base(tok) != "tok512.bin" {
		t.Errorf("Files = %s, %s", ckpt, tok)
	}
	empty := t.TempDir()
	if _, _, err := Files(empty); err == nil || !strings.Contains(err.Error(), "found 0") {
		t.Errorf("empty dir: err = %v", err)
	}
	if _, err := Open(empty, Options{}); err == nil {
		t.Error("Open of an empty dir succeeded")
	}
	two := t.TempDir()
	for _, f := range []string{"a.bin", "b.bin", "tok.bin"} {
		os.WriteFile(filepath.Join(two, f), nil, 0o644)
	}
	if _, _, err := Files(two); err == nil || !strings.Contains(err.Error(), "found 2") {
		t.Errorf("two checkpoints: err = %v", err)
	}
	// An explicit choice resolves the ambiguity; the empty file is then
	// rejected by the loader with a clear error.
	if _, err := Open(two, Options{CheckpointFile: "a.bin"}); err == nil || !strings.Contains(err.Error(), "truncated header") {
		t.Errorf("Open(empty checkpoint): err = %v", err)
	}
}

func TestCloseDuringGeneration(t *testing.T) {
	hold := make(chan struct{})
	inStep := make(chan struct{}, 1)
	var once sync.Once
	e, err := open(modelDir(t), Options{}, func() {
		once.Do(func() { inStep <- struct{}{}; <-hold })
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion}, func(task.Delta) error { return nil })
		done <- err
	}()
	<-inStep // the request is running, the loop held inside its first step
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	<-e.quit // Close has marked the engine closed
	close(hold)
	<-closed
	wantStatus(t, <-done, http.StatusServiceUnavailable, "engine_closed")
}
