package llama

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestRecordBoundsHoldForTheBuiltInEngine runs the built-in engine on
// stories260K through the real link with the gateway's default record
// checks (task.DefaultUsageBounds): its honest records — prompts of
// ASCII, accents and emoji, byte-fallback tokens, stop strings, greedy and
// sampled, streamed and not, embeddings — all pass, so the defaults do not
// refuse an honest worker. It logs how close the counts come to the bounds.
func TestRecordBoundsHoldForTheBuiltInEngine(t *testing.T) {
	e := openTestEngine(t, Options{})
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: "0xabc", Engine: e})
	srv := httptest.NewServer(workers.NewHandler(agent, nil))
	defer srv.Close()
	link := workers.NewClient(srv.URL, workers.ClientOptions{Records: workers.RecordPolicy{WorkerID: "0xabc", Models: e.Models()}})
	var tasks []task.Task
	for i, content := range []string{"", "Once upon a time", "Lily 🙂 ünïcödé 日本語", strings.Repeat("x", 300), "The end.\n\n\n"} {
		temp := 0.0
		if i%2 == 1 {
			temp = 1
		}
		tasks = append(tasks,
			task.Task{RequestID: fmt.Sprint("chat", i), Kind: task.KindChat, Model: "stories260K", Subject: "k", Stream: i%2 == 0, Temperature: temp,
				Messages: []task.Message{{Role: "system", Content: "Tell a story."}, {Role: "user", Content: content}}, MaxTokens: 100},
			task.Task{RequestID: fmt.Sprint("cmpl", i), Kind: task.KindCompletion, Model: "stories260K", Subject: "k", Prompt: content,
				MaxTokens: 100, Temperature: temp, Stop: []string{"."}},
			task.Task{RequestID: fmt.Sprint("emb", i), Kind: task.KindEmbedding, Model: "stories260K", Subject: "k", Inputs: []string{content, "a"}},
		)
	}
	text := map[int]int{}
	err := link.Run(context.Background(), &task.Batch{ID: "honest", Tasks: tasks}, func(ev task.Event) {
		text[ev.Index] += len(ev.Text)
		if ev.Type != task.EventDone {
			return
		}
		tk := &tasks[ev.Index]
		b := task.DefaultUsageBounds
		t.Logf("%-6s prompt %3d of %4d, completion %3d of %4d (text %d bytes)", tk.RequestID, ev.Usage.PromptTokens, b.MaxPromptTokens(tk),
			ev.Usage.CompletionTokens, b.MaxCompletionTokens(tk, text[ev.Index]), text[ev.Index])
	})
	if err != nil {
		t.Fatalf("an honest record was refused: %v", err)
	}
}
