package audit

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/llama"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

const modelDir = "../../shared/models/stories260K"

// claiming serves with one engine but registers another model version: the
// dishonest worker's trick.
type claiming struct {
	task.Engine
	claim task.ModelVersion
}

func (c claiming) Models() []task.ModelVersion { return []task.ModelVersion{c.claim} }

func (c claiming) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	t2 := *t
	t2.Model = c.Engine.Models()[0].Name
	return c.Engine.Generate(ctx, &t2, emit)
}

func openLlama(t testing.TB, dir string, opts llama.Options) *llama.Engine {
	t.Helper()
	opts.Threads, opts.ModelName = 1, "stories260K"
	e, err := llama.Open(dir, opts)
	if err != nil {
		t.Skipf("built-in model unavailable: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// perturbedCheckpoint writes a copy of stories260K whose weights are each
// scaled by 1+scale·u, u uniform in [-1, 1) from seed: a cheaper or
// corrupted model that still writes plausible text.
func perturbedCheckpoint(t testing.TB, scale float64, seed uint64) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(modelDir, "stories260K.bin"))
	if err != nil {
		t.Skipf("built-in model unavailable: %v", err)
	}
	r := mrand.New(mrand.NewPCG(seed, 1))
	for off := 7 * 4; off+4 <= len(data); off += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		f *= float32(1 + scale*(2*r.Float64()-1))
		binary.LittleEndian.PutUint32(data[off:], math.Float32bits(f))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(modelDir, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tok512.bin"), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

type cluster struct {
	sched *scheduler.Scheduler
	model task.ModelVersion
}

// newCluster starts one worker per engine over the real link (HTTP,
// workers.NewHandler, the agent), each from its own provider, and a
// scheduler dialling them with workers.NewClient.
func newCluster(t testing.TB, engines map[string]task.Engine) *cluster {
	t.Helper()
	// No heartbeats here: a registration stands for the whole test.
	s, err := scheduler.New(scheduler.Config{HeartbeatTimeout: time.Hour}, scheduler.Deps{
		Clock: clock.Real{},
		DialWorker: func(w *task.Registered) scheduler.Conn {
			return workers.NewClient(w.URL, workers.ClientOptions{Token: w.SessionToken})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var model task.ModelVersion
	for id, eng := range engines {
		agent := workers.NewAgent(workers.AgentConfig{WorkerID: id, Engine: eng, MaxConcurrency: 4})
		srv := httptest.NewServer(workers.NewHandler(agent, slog.New(slog.DiscardHandler)))
		t.Cleanup(srv.Close)
		model = eng.Models()[0]
		s.Upsert(&task.Registered{WorkerID: id, URL: srv.URL, MaxConcurrency: 4, Models: eng.Models(),
			Provider: "provider-" + id})
	}
	return &cluster{sched: s, model: model}
}

// serve runs one greedy request through the scheduler as the gateway does
// and returns what the gateway hands the auditor.
func (c *cluster) serve(ctx context.Context, i int) (*task.Task, *task.Completion, string, string, error) {
	tk := &task.Task{RequestID: fmt.Sprintf("req-%d", i), Kind: task.KindCompletion, Model: c.model.Name,
		Prompt: prompts[i%len(prompts)], MaxTokens: 24, Subject: "dev"}
	var text strings.Builder
	var done *task.Event
	err := c.sched.Dispatch(ctx, tk, func(ev task.Event) error {
		text.WriteString(ev.Text)
		if ev.Type == task.EventDone {
			done = &ev
		}
		return nil
	})
	if err != nil {
		return nil, nil, "", "", err
	}
	return tk, done.Completion, done.FinishReason, text.String(), nil
}

var prompts = []string{
	"Once upon a time", "Lily wanted to", "The little dog", "One day, Tom went", "The sun was",
	"Sam and his mom", "There was a big", "A bird sat on", "The girl saw a", "Ben liked to play",
}

type markLog struct {
	mu     sync.Mutex
	states map[string]string
}

func (m *markLog) MarkAudit(_ context.Context, id, state string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[id] = state
	return nil
}

// TestDishonestWorkerDisputed plays the attack the auditor exists for: a
// worker registers stories260K's digest but runs something else (the
// simulator, or a perturbed checkpoint). Two honest built-in workers never
// disagree with each other; the dishonest one is disputed, with evidence
// of equal request digests and different response digests, and is out of
// rotation afterwards.
func TestDishonestWorkerDisputed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dishonest func(t *testing.T, claim task.ModelVersion) task.Engine
	}{
		{"simulator", func(t *testing.T, claim task.ModelVersion) task.Engine {
			e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
			if err != nil {
				t.Fatal(err)
			}
			return claiming{e, claim}
		}},
		{"perturbed checkpoint", func(t *testing.T, claim task.ModelVersion) task.Engine {
			return claiming{openLlama(t, perturbedCheckpoint(t, 0.05, 7), llama.Options{}), claim}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h1 := openLlama(t, modelDir, llama.Options{})
			h2 := openLlama(t, modelDir, llama.Options{})
			claim := h1.Models()[0]
			if claim.Determinism != task.DeterminismExact {
				t.Fatalf("built-in engine declares determinism %q", claim.Determinism)
			}
			c := newCluster(t, map[string]task.Engine{"0x01": h1, "0x02": h2, "0x0bad": tc.dishonest(t, claim)})
			marks := &markLog{states: map[string]string{}}
			a, err := New(Config{Rate: 1, MaxShare: 1, Concurrency: 1},
				Deps{Pool: c.sched, Marker: marks, Rand: mrand.NewChaCha8([32]byte{1})})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			for i := range 30 {
				tk, comp, finish, text, err := c.serve(ctx, i)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				a.Observe(fmt.Sprintf("rcpt-%d", i), tk, 10*time.Minute, comp, finish, text, true)
				j := <-a.queue // one at a time, so the order of events is the test's
				a.audit(ctx, &j)
				if len(a.Disputes()) > 0 {
					break
				}
			}
			ds := a.Disputes()
			if len(ds) != 1 {
				t.Fatalf("disputes = %+v, stats %+v; want one, of the dishonest worker", ds, a.Stats())
			}
			d := ds[0]
			if d.WorkerID != "0x0bad" {
				t.Fatalf("disputed %s, want 0x0bad: %+v", d.WorkerID, d)
			}
			checkEvidence(t, &d)
			for _, w := range c.sched.Workers() {
				if want := w.WorkerID == "0x0bad"; (w.Disputed != "") != want {
					t.Errorf("worker %s disputed = %q", w.WorkerID, w.Disputed)
				}
			}
			for _, p := range c.sched.Peers(claim.Name, claim.Digest) {
				if p.ID == "0x0bad" && p.InRotation {
					t.Error("disputed worker still in rotation")
				}
			}
			// Whatever else was audited passed, except the disputed receipt.
			for id, st := range marks.states {
				if st != StatePassed && id != d.ReceiptID {
					t.Errorf("receipt %s audit %s", id, st)
				}
			}
			// Once out of rotation it gets no more traffic.
			for i := 100; i < 110; i++ {
				_, comp, _, _, err := c.serve(ctx, i)
				if err != nil {
					t.Fatal(err)
				}
				if comp.WorkerID == "0x0bad" {
					t.Fatal("a request went to the disputed worker")
				}
			}
		})
	}
}

// checkEvidence: three executions of one request and model version, the
// disputed worker's response differing from the two that agree.
func checkEvidence(t *testing.T, d *Dispute) {
	t.Helper()
	if len(d.Executions) != 3 {
		t.Fatalf("evidence has %d executions", len(d.Executions))
	}
	var bad, good []task.Completion
	for _, e := range d.Executions {
		c := e.Completion
		if c.RequestDigest != d.RequestDigest || c.Model != d.Model || c.ModelDigest != d.ModelDigest {
			t.Errorf("execution %s names another request or version: %+v", e.Role, c)
		}
		if c.WorkerID != e.WorkerID {
			t.Errorf("execution %s: record of %s, attributed to %s", e.Role, c.WorkerID, e.WorkerID)
		}
		if e.WorkerID == d.WorkerID {
			bad = append(bad, c)
		} else {
			good = append(good, c)
		}
	}
	if len(bad) != 1 || len(good) != 2 || good[0].ResponseDigest != good[1].ResponseDigest ||
		bad[0].ResponseDigest == good[0].ResponseDigest {
		t.Errorf("evidence does not convict %s: %+v", d.WorkerID, d.Executions)
	}
}

// TestHonestWorkersNeverDisputed audits every request of two honest
// built-in workers (and a third, so referees exist) with the exact
// comparator: continuous batching on a shared engine must not change a
// byte.
func TestHonestWorkersNeverDisputed(t *testing.T) {
	c := newCluster(t, map[string]task.Engine{
		"0x01": openLlama(t, modelDir, llama.Options{}),
		"0x02": openLlama(t, modelDir, llama.Options{}),
		"0x03": openLlama(t, modelDir, llama.Options{}),
	})
	a, err := New(Config{Rate: 1, MaxShare: 1, Concurrency: 2, Queue: 1024},
		Deps{Pool: c.sched, Rand: mrand.NewChaCha8([32]byte{2})})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	n := 60
	if testing.Short() {
		n = 20
	}
	// Audits run beside the traffic (two at a time, as Run would), so
	// engines batch re-executions with other requests.
	var auditors sync.WaitGroup
	for range 2 {
		auditors.Add(1)
		go func() {
			defer auditors.Done()
			for j := range a.queue {
				a.audit(ctx, &j)
			}
		}()
	}
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 3 {
				tk, comp, finish, text, err := c.serve(ctx, i)
				if err != nil {
					t.Error(err)
					return
				}
				a.Observe(fmt.Sprintf("rcpt-%d", i), tk, 10*time.Minute, comp, finish, text, true)
			}
		}()
	}
	wg.Wait()
	close(a.queue) // no more Observe: the auditors drain it and stop
	auditors.Wait()
	st := a.Stats()
	if st.Disputes != 0 || st.Mismatched != 0 || st.Errors != 0 || st.Passed != uint64(n) {
		t.Fatalf("honest workers: %+v, disputes %+v", st, a.Disputes())
	}
}
