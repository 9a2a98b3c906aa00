package llama

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// modelDir locates the shared stories260K files, or skips the test.
func modelDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "..", "shared", "models", "stories260K")
	if s := os.Getenv("TOLLGATE_SHARED"); s != "" {
		dir = filepath.Join(s, "models", "stories260K")
	}
	for _, f := range []string{"stories260K.bin", "tok512.bin", "golden.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Skipf("stories260K model files not available (%v); set TOLLGATE_SHARED to the shared directory", err)
		}
	}
	return dir
}

type goldenCase struct {
	Prompt       string `json:"prompt"`
	Steps        int    `json:"steps"`
	PromptTokens []int  `json:"prompt_tokens"`
	NextTokens   []int  `json:"next_tokens"`
	Text         string `json:"text"`
}

func loadGolden(t testing.TB, dir string) []goldenCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("golden.json has no cases")
	}
	return g.Cases
}

func openTestEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	e, err := Open(modelDir(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// goldenResult is what one golden case produced through the engine.
type goldenResult struct {
	tokens []int  // every next token, prompt replay included, as run.c records them
	text   string // completion text as Generate streamed it
	result task.Result
}

// runGolden runs a golden case as the completion request the package
// comment describes, recording token IDs through the engine's token hook
// and text through Generate.
func runGolden(ctx context.Context, e *Engine, c goldenCase) (goldenResult, error) {
	var got goldenResult
	got.tokens = append(got.tokens, c.PromptTokens[1:]...)
	tk := &task.Task{Kind: task.KindCompletion, Model: "stories260K", Prompt: c.Prompt,
		MaxTokens: c.Steps - len(c.PromptTokens) + 1}
	r, err := e.newRequest(tk)
	if err != nil {
		return got, err
	}
	if _, err := e.run(ctx, r, func(tok int) error { got.tokens = append(got.tokens, tok); return nil }); err != nil {
		return got, err
	}
	var sb strings.Builder
	got.result, err = e.Generate(ctx, tk, func(d task.Delta) error { sb.WriteString(d.Text); return nil })
	got.text = sb.String()
	return got, err
}

func checkGolden(t *testing.T, e *Engine, c goldenCase, got goldenResult) {
	t.Helper()
	if diff := cmp.Diff(e.tok.Encode(c.Prompt, true), c.PromptTokens); diff != "" {
		t.Errorf("prompt tokens (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(got.tokens, c.NextTokens); diff != "" {
		t.Errorf("next tokens (-got +want):\n%s", diff)
	}
	// run.c's text: every decoded piece after BOS, prompt included.
	var all strings.Builder
	prev := tokenBOS
	for _, tok := range c.NextTokens {
		all.WriteString(e.tok.Decode(prev, tok))
		prev = tok
	}
	if all.String() != c.Text {
		t.Errorf("decoded text differs from golden:\n got %q\nwant %q", all.String(), c.Text)
	}
	if !strings.HasPrefix(c.Text, c.Prompt) || got.text != c.Text[len(c.Prompt):] {
		t.Errorf("completion text:\n got %q\nwant %q", got.text, strings.TrimPrefix(c.Text, c.Prompt))
	}
	want := task.Result{FinishReason: "length", PromptTokens: len(c.PromptTokens), CompletionTokens: c.Steps - len(c.PromptTokens) + 1}
	if diff := cmp.Diff(got.result, want); diff != "" {
		t.Errorf("result (-got +want):\n%s", diff)
	}
}

func TestGoldenSequential(t *testing.T) {
	e := openTestEngine(t, Options{})
	for _, c := range loadGolden(t, modelDir(t)) {
		t.Run(caseName(c), func(t *testing.T) {
			got, err := runGolden(t.Context(), e, c)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, e, c, got)
		})
	}
}

// TestGoldenConcurrent runs every case at once, several times over, so the
// cases share batched steps (and prefill chunks) with each other.
func TestGoldenConcurrent(t *testing.T) {
	e := openTestEngine(t, Options{MaxNumSeqs: 16, MaxBatchTokens: 20})
	cases := loadGolden(t, modelDir(t))
	const copies = 3
	results := make([]goldenResult, len(cases)*copies)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i], errs[i] = runGolden(t.Context(), e, cases[i%len(cases)]) })
	}
	wg.Wait()
	for i, got := range results {
		c := cases[i%len(cases)]
		t.Run(caseName(c), func(t *testing.T) {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			checkGolden(t, e, c, got)
		})
	}
	if e.steps.Load() >= int64(copies*len(cases)*2*200) {
		t.Errorf("%d steps: the concurrent cases did not share batched steps", e.steps.Load())
	}
}

func caseName(c goldenCase) string {
	if c.Prompt == "" {
		return "empty prompt"
	}
	return c.Prompt
}
