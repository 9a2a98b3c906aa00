package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/llama"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

func init() {
	register(benchCommands, "audit", "spot re-execution audits: false disputes among honest built-in workers, detection of a dishonest one against the sampling rate", runBenchAudit)
}

// runBenchAudit measures the auditor in two steps.
//
// 1. Real executions, in process, over the real worker link: three honest
// built-in workers on stories260K audit each other's greedy requests
// (-honest-audits of them; every mismatch or dispute among them is a false
// positive), then two honest workers audit a dishonest one that registers
// stories260K's digest but runs the simulator or a perturbed checkpoint
// (-dishonest-audits of them): q is the fraction of its audited requests
// that end in its dispute.
//
// 2. Detection against the sampling rate, over -runs seeded runs per rate:
// the auditor's own draw (ChaCha8 seeded per run, as Observe draws) picks
// which of the dishonest worker's requests are audited, and each audit
// catches it with probability q; the run's figure is how many requests
// the dishonest worker served before its dispute.
func runBenchAudit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate bench audit", flag.ContinueOnError)
	modelDir := fs.String("model", "", "stories260K directory (default: ../shared/models/stories260K)")
	honest := fs.Int("honest-audits", 2000, "audits among honest workers (the false-positive measurement)")
	dishonestN := fs.Int("dishonest-audits", 200, "audits of the dishonest worker (its per-audit detection)")
	kind := fs.String("dishonest", "perturbed", "what the dishonest worker runs: perturbed (stories260K with each weight scaled by 1+u·perturb, u uniform in [-1,1)) or sim")
	perturb := fs.Float64("perturb", 0.01, "relative weight perturbation of the perturbed checkpoint")
	runs := fs.Int("runs", 1000, "seeded runs per sampling rate")
	rates := fs.String("rates", "0.001,0.002,0.005,0.01,0.02,0.05", "sampling rates, comma-separated")
	within := fs.Int("within", 500, "report the runs detected within this many dishonest requests")
	seed := fs.Uint64("seed", 1, "seed of the runs and the prompts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := *modelDir
	if dir == "" {
		dir = sharedModelDir()
	}
	if dir == "" {
		return errors.New("stories260K not found: pass -model")
	}
	var rs []float64
	for _, f := range strings.Split(*rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 || v > 1 {
			return fmt.Errorf("-rates: %q is not in (0, 1]", f)
		}
		rs = append(rs, v)
	}

	start := time.Now()
	fp, err := measureAudits(ctx, dir, "", 0, *honest, *seed)
	if err != nil {
		return err
	}
	fmt.Printf("## Honest built-in workers (3 workers, 3 providers, greedy, exact comparator)\n\n")
	fmt.Printf("audits %d, passed %d, mismatches %d, disputes %d, errors %d (%.0f s)\n\n",
		fp.audited, fp.passed, fp.mismatched, fp.disputes, fp.errors, time.Since(start).Seconds())

	start = time.Now()
	dh, err := measureAudits(ctx, dir, *kind, *perturb, *dishonestN, *seed+1)
	if err != nil {
		return err
	}
	q := 0.0
	if dh.audited > 0 {
		q = float64(dh.disputedBad) / float64(dh.audited)
	}
	what := *kind
	if what == "perturbed" {
		what = fmt.Sprintf("perturbed checkpoint, ±%g", *perturb)
	}
	fmt.Printf("## Dishonest worker (%s) audited by honest ones\n\n", what)
	fmt.Printf("audits %d, identical answers %d, dishonest worker disputed %d (q = %.4f), honest workers disputed %d (%.0f s)\n\n",
		dh.audited, dh.passed, dh.disputedBad, q, dh.disputes-dh.disputedBad, time.Since(start).Seconds())

	fmt.Printf("## Requests served by the dishonest worker before its dispute (%d seeded runs per rate, q = %.4f)\n\n", *runs, q)
	fmt.Printf("| sampling rate | median | p90 | p99 | max | detected within %d |\n|---|---|---|---|---|---|\n", *within)
	for _, p := range rs {
		served := make([]int, *runs)
		hit := 0
		for r := range *runs {
			var key [32]byte
			binary.LittleEndian.PutUint64(key[:], *seed)
			binary.LittleEndian.PutUint64(key[8:], uint64(r))
			binary.LittleEndian.PutUint64(key[16:], math.Float64bits(p))
			rnd := mrand.New(mrand.NewChaCha8(key))
			n := 0
			for {
				n++
				if rnd.Float64() < p && rnd.Float64() < q {
					break
				}
				if n >= 1_000_000 || q == 0 {
					break
				}
			}
			served[r] = n
			if n <= *within {
				hit++
			}
		}
		slices.Sort(served)
		pct := func(f float64) int { return served[min(int(f*float64(len(served))), len(served)-1)] }
		fmt.Printf("| %.3f | %d | %d | %d | %d | %.1f %% |\n", p, pct(0.5), pct(0.9), pct(0.99), served[len(served)-1], 100*float64(hit)/float64(*runs))
	}
	return nil
}

type auditTally struct {
	audited, passed, mismatched, disputes, disputedBad, errors int
}

// recordingPool is the scheduler with disputes recorded but not acted on:
// the bench keeps the dishonest worker in rotation to measure each audit.
type recordingPool struct {
	*scheduler.Scheduler
	mu       sync.Mutex
	disputed map[string]int
}

func (p *recordingPool) Dispute(workerID, _ string) {
	p.mu.Lock()
	p.disputed[workerID]++
	p.mu.Unlock()
}

// measureAudits serves greedy requests on three workers (the third
// dishonest when kind is set) and audits n of them: every request when
// all are honest, only the dishonest worker's otherwise.
func measureAudits(ctx context.Context, dir, kind string, perturb float64, n int, seed uint64) (auditTally, error) {
	var tally auditTally
	logger := slog.New(slog.DiscardHandler)
	s, err := scheduler.New(scheduler.Config{Policy: scheduler.PolicyRoundRobin, HeartbeatTimeout: 24 * time.Hour}, scheduler.Deps{
		DialWorker: func(w *task.Registered) scheduler.Conn {
			return workers.NewClient(w.URL, workers.ClientOptions{Token: w.SessionToken})
		},
	})
	if err != nil {
		return tally, err
	}
	var claim task.ModelVersion
	ids := []string{"0x01", "0x02", "0x03"}
	for i, id := range ids {
		l, err := llama.Open(dir, llama.Options{ModelName: "stories260K", Threads: 1})
		if err != nil {
			return tally, err
		}
		defer l.Close()
		claim = l.Models()[0]
		var eng task.Engine = l
		if i == 2 && kind != "" {
			if eng, err = dishonestEngine(kind, dir, perturb, claim); err != nil {
				return tally, err
			}
		}
		agent := workers.NewAgent(workers.AgentConfig{WorkerID: id, Engine: eng, MaxConcurrency: 4, Logger: logger})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return tally, err
		}
		srv := &http.Server{Handler: workers.NewHandler(agent, logger)}
		go srv.Serve(ln)
		defer srv.Close()
		s.Upsert(&task.Registered{WorkerID: id, URL: "http://" + ln.Addr().String(), MaxConcurrency: 4,
			Models: eng.Models(), Provider: "provider-" + id})
	}
	pool := &recordingPool{Scheduler: s, disputed: map[string]int{}}
	a, err := audit.New(audit.Config{Rate: 1, MaxShare: 1, Queue: n + 16, Concurrency: 2},
		audit.Deps{Pool: pool, Logger: logger, Rand: mrand.NewChaCha8([32]byte{byte(seed)})})
	if err != nil {
		return tally, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	rnd := mrand.New(mrand.NewPCG(seed, 2))
	words := []string{"Once", "upon", "a", "time", "Lily", "Tom", "the", "dog", "cat", "sun", "park", "ball", "happy", "big", "little", "saw", "went", "played", "said", "mom"}
	observed := 0
	for i := 0; observed < n; i++ {
		var sb strings.Builder
		for k := range 1 + rnd.IntN(6) {
			if k > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[rnd.IntN(len(words))])
		}
		tk := &task.Task{RequestID: fmt.Sprintf("bench-%d-%d", seed, i), Kind: task.KindCompletion, Model: claim.Name,
			Prompt: sb.String(), MaxTokens: 8 + rnd.IntN(40), Subject: "bench"}
		var text strings.Builder
		var ev *task.Event
		if err := s.Dispatch(ctx, tk, func(e task.Event) error {
			text.WriteString(e.Text)
			if e.Type == task.EventDone {
				ev = &e
			}
			return nil
		}); err != nil {
			return tally, err
		}
		if kind != "" && ev.Completion.WorkerID != ids[2] {
			continue
		}
		observed++
		a.Observe(tk.RequestID, tk, gateway.DefaultRequestDeadline, ev.Completion, ev.FinishReason, text.String(), true)
	}
	for {
		st := a.Stats()
		if st.Audited+st.Errors+st.SkippedNoPeer >= st.Sampled-st.Dropped {
			break
		}
		select {
		case <-ctx.Done():
			return tally, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	<-done
	st := a.Stats()
	tally.audited, tally.passed, tally.mismatched, tally.errors = int(st.Audited), int(st.Passed), int(st.Mismatched), int(st.Errors)
	for id, k := range pool.disputed {
		tally.disputes += k
		if kind != "" && id == ids[2] {
			tally.disputedBad += k
		}
	}
	if st.Dropped > 0 {
		fmt.Fprintf(os.Stderr, "bench audit: %d samples dropped\n", st.Dropped)
	}
	return tally, nil
}

// dishonestEngine registers claim while running something else.
func dishonestEngine(kind, dir string, perturb float64, claim task.ModelVersion) (task.Engine, error) {
	switch kind {
	case "sim":
		e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
		if err != nil {
			return nil, err
		}
		return claimed{e, claim}, nil
	case "perturbed":
		data, err := os.ReadFile(filepath.Join(dir, "stories260K.bin"))
		if err != nil {
			return nil, err
		}
		r := mrand.New(mrand.NewPCG(7, 7))
		for off := 7 * 4; off+4 <= len(data); off += 4 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
			f *= float32(1 + perturb*(2*r.Float64()-1))
			binary.LittleEndian.PutUint32(data[off:], math.Float32bits(f))
		}
		tmp, err := os.MkdirTemp("", "tollgate-perturbed-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp) // the engine has read both files by the time Open returns
		if err := os.WriteFile(filepath.Join(tmp, "model.bin"), data, 0o600); err != nil {
			return nil, err
		}
		tok, err := os.ReadFile(filepath.Join(dir, "tok512.bin"))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, "tok512.bin"), tok, 0o600); err != nil {
			return nil, err
		}
		e, err := llama.Open(tmp, llama.Options{ModelName: "perturbed", Threads: 1})
		if err != nil {
			return nil, err
		}
		return claimed{e, claim}, nil
	}
	return nil, fmt.Errorf("-dishonest: %q is not perturbed or sim", kind)
}

// claimed registers another engine's model version while serving with its own.
type claimed struct {
	task.Engine
	claim task.ModelVersion
}

func (c claimed) Models() []task.ModelVersion { return []task.ModelVersion{c.claim} }

func (c claimed) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	t2 := *t
	t2.Model = c.Engine.Models()[0].Name
	return c.Engine.Generate(ctx, &t2, emit)
}
