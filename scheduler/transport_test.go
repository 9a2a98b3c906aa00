package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// The gateway dials workers with workers.NewClient.
var _ Conn = (*workers.Client)(nil)

// TestDispatchOverRealTransport runs tasks through the real worker link:
// workers.Client → HTTP → workers.NewHandler → Agent → the simulator.
func TestDispatchOverRealTransport(t *testing.T) {
	eng, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	model := eng.Models()[0]
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: "live", Engine: eng})
	live := httptest.NewServer(workers.NewHandler(agent, slog.New(slog.DiscardHandler)))
	defer live.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // connection refused: a link failure before any event

	s, err := New(Config{Policy: PolicyRoundRobin}, Deps{
		Clock: clock.Real{},
		DialWorker: func(w *task.Registered) Conn {
			return workers.NewClient(w.URL, workers.ClientOptions{Token: w.SessionToken})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ id, url string }{{"live", live.URL}, {"dead", dead.URL}} {
		s.Upsert(&task.Registered{WorkerID: w.id, URL: w.url, MaxConcurrency: 4, Models: []task.ModelVersion{model}})
	}

	t.Run("chat streams to done; a dead worker is retried around", func(t *testing.T) {
		for i := 0; i < 4; i++ { // round-robin hits the dead worker at least once
			var text strings.Builder
			var done *task.Event
			tk := &task.Task{RequestID: "r", Kind: task.KindChat, Model: model.Name, MaxTokens: 8,
				Messages: []task.Message{{Role: "user", Content: "tell me a story"}}}
			err := s.Dispatch(context.Background(), tk, func(ev task.Event) error {
				if ev.Index != 0 {
					t.Errorf("event index %d, want 0", ev.Index)
				}
				text.WriteString(ev.Text)
				if ev.Type == task.EventDone {
					done = &ev
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Dispatch #%d = %v", i, err)
			}
			if done == nil || done.Usage == nil || done.Usage.CompletionTokens == 0 || text.Len() == 0 {
				t.Fatalf("Dispatch #%d: no text or usage (done=%+v)", i, done)
			}
		}
		if st := s.Stats(); st.Retries == 0 || st.Ejections == 0 {
			t.Errorf("dead worker never retried around: %+v", st)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		tk := &task.Task{RequestID: "e", Kind: task.KindEmbedding, Model: model.Name, Inputs: []string{"a", "b"}}
		var vecs [][]float32
		err := s.Dispatch(context.Background(), tk, func(ev task.Event) error {
			vecs = ev.Embeddings
			return nil
		})
		if err != nil || len(vecs) != 2 {
			t.Fatalf("embeddings: err=%v, %d vectors", err, len(vecs))
		}
	})

	t.Run("client gone mid-stream: error returned, worker freed", func(t *testing.T) {
		gone := errors.New("client went away")
		tk := &task.Task{RequestID: "c", Kind: task.KindCompletion, Model: model.Name, Prompt: "once upon", MaxTokens: 64}
		err := s.Dispatch(context.Background(), tk, func(task.Event) error { return gone })
		if !errors.Is(err, gone) {
			t.Fatalf("Dispatch = %v, want the onEvent error", err)
		}
		// The worker confirms the cancellation and the slot frees.
		waitFor(t, func() bool { return s.Stats().InFlight == 0 })
	})
}
