package llama

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// TestSyntheticModels runs small generated checkpoints through the whole
// engine: a separate classifier, plain multi-head and grouped-query
// attention, and head sizes that take the generic (not 8-wide) attention
// path. A request must produce the same tokens alone and in a full batch.
func TestSyntheticModels(t *testing.T) {
	pieces := []string{"<unk>", "<s>", "</s>", " ", "a", "b", " a", "ab", "ba", " b"}
	scores := []float32{0, 0, 0, -5, -1, -1, -2, -3, -3, -2}
	tests := []struct {
		name                                        string
		dim, hidden, layers, heads, kvHeads, seqLen int32
		vocab                                       int32
	}{
		{"separate classifier, GQA, head size 4", 8, 12, 2, 2, 1, 32, -10},
		{"shared classifier, MHA, head size 2", 8, 20, 3, 4, 4, 24, 10},
		{"head size 16", 32, 40, 1, 2, 2, 16, -10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ckpt := buildCheckpoint(tt.dim, tt.hidden, tt.layers, tt.heads, tt.kvHeads, tt.vocab, tt.seqLen)
			if err := os.WriteFile(filepath.Join(dir, "model.bin"), ckpt, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "tok10.bin"), buildTokenizer(5, pieces, scores), 0o644); err != nil {
				t.Fatal(err)
			}
			e, err := Open(dir, Options{ModelName: "synthetic", MaxBatchTokens: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			gen := func(prompt string, seed int64) (string, task.Result) {
				var text string
				res, err := e.Generate(t.Context(), &task.Task{Kind: task.KindCompletion, Model: "synthetic",
					Prompt: prompt, Temperature: 1, Seed: &seed}, func(d task.Delta) error { text += d.Text; return nil })
				if err != nil {
					t.Error(err)
				}
				return text, res
			}
			prompts := []string{"", "a", "ab ba", "b a b a a b", "aaaa"}
			alone := make([]string, len(prompts))
			for i, p := range prompts {
				alone[i], _ = gen(p, int64(i))
			}
			together := make([]string, len(prompts))
			var wg sync.WaitGroup
			for i, p := range prompts {
				wg.Go(func() { together[i], _ = gen(p, int64(i)) })
			}
			wg.Wait()
			if strings.Join(alone, "") == "" {
				t.Fatal("no prompt generated any text")
			}
			if diff := cmp.Diff(together, alone); diff != "" {
				t.Errorf("batched vs alone (-got +want):\n%s", diff)
			}
			if _, err := e.Embed(t.Context(), "synthetic", prompts); err != nil {
				t.Error(err)
			}
		})
	}
}
