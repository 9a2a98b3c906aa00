package sched

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// SimWorker is a simulated worker for the scheduling bench: a discrete-event
// model of workers/engine/sim's latency profile on the virtual clock. It uses
// the simulator's own formulas (sim.LoadFactor, sim.Jitter) and limits
// (MaxNumSeqs running, MaxWaiting queued, then 429):
//
//	TTFT      = (PrefillOverhead + PrefillPerToken × prompt) × LoadFactor(running) × slowdown × jitter
//	k tokens  = k × InterTokenLatency × LoadFactor(running) × slowdown × jitter
//
// To keep a run fast it times decode in chunks of ChunkTokens tokens (the
// engine times every token), sampling the load at the start of each chunk.
// It implements scheduler.Conn and scheduler.StartConn.
type SimWorker struct {
	ID      string
	Profile sim.Profile
	// ChunkTokens is how many tokens one decode step event covers (default 8).
	ChunkTokens int
	// OnTask, when set, sees every task the worker is given (the bench
	// learns who served a request, to audit it elsewhere).
	OnTask func(*task.Task)

	clk      *VirtualClock
	rng      *rand.Rand
	slowdown float64
	running  int
	kvTokens int
	waiting  []*simSeq
	seqs     map[seqKey]*simSeq
}

type seqKey struct {
	batch string
	index int
}

type simSeq struct {
	key       seqKey
	run       *simRun
	prompt    int
	output    int
	generated int
	timer     interface{ Stop() bool }
	started   bool
	ended     bool
}

type simRun struct {
	open    int
	onEvent func(task.Event)
	onEnd   func(error)
}

var (
	_ scheduler.Conn      = (*SimWorker)(nil)
	_ scheduler.StartConn = (*SimWorker)(nil)
)

// NewSimWorker returns a simulated worker on clk.
func NewSimWorker(id string, p sim.Profile, clk *VirtualClock, seed uint64) *SimWorker {
	return &SimWorker{ID: id, Profile: p, ChunkTokens: 8, clk: clk, rng: rand.New(rand.NewPCG(seed, 0x5eed)),
		slowdown: 1, seqs: map[seqKey]*simSeq{}}
}

// SetSlowdown multiplies every later step's latency by f.
func (w *SimWorker) SetSlowdown(f float64) { w.slowdown = f }

// Load is what the worker's heartbeat reports.
func (w *SimWorker) Load() task.Load {
	kv := 0.0
	if w.Profile.KVCacheTokens > 0 {
		kv = min(1, float64(w.kvTokens)/float64(w.Profile.KVCacheTokens))
	}
	return task.Load{Waiting: len(w.waiting), Running: w.running, KVCacheUsage: kv, Source: "sim"}
}

// Run is not used on the virtual clock: the scheduler calls Start.
func (w *SimWorker) Run(context.Context, *task.Batch, func(task.Event)) error {
	return fmt.Errorf("sim worker %s: use Start on the virtual clock", w.ID)
}

// Start runs a batch: each task's prompt length is its PromptTokensHint and
// its output length its MaxTokens.
func (w *SimWorker) Start(b *task.Batch, onEvent func(task.Event), onEnd func(error)) {
	run := &simRun{open: len(b.Tasks), onEvent: onEvent, onEnd: onEnd}
	for i := range b.Tasks {
		t := &b.Tasks[i]
		if w.OnTask != nil {
			w.OnTask(t)
		}
		s := &simSeq{key: seqKey{b.ID, i}, run: run, prompt: max(t.PromptTokensHint, 1), output: max(t.MaxTokens, 1)}
		w.seqs[s.key] = s
		switch {
		case w.running < w.Profile.MaxNumSeqs:
			w.start(s)
		case len(w.waiting) < w.Profile.MaxWaiting:
			w.waiting = append(w.waiting, s)
		default:
			w.fail(s, &task.EventError{Status: 429, Type: "rate_limit_error", Code: "engine_queue_full", Message: "the engine's waiting queue is full"})
		}
	}
}

// Cancel stops one task; it ends with EventFailed 499 like the real agent.
func (w *SimWorker) Cancel(_ context.Context, batchID string, index int) error {
	if s, ok := w.seqs[seqKey{batchID, index}]; ok && !s.ended {
		w.fail(s, &task.EventError{Status: workers.StatusClientClosed, Type: "invalid_request_error", Code: "cancelled", Message: "the request was cancelled"})
	}
	return nil
}

func (w *SimWorker) factor() float64 {
	return sim.LoadFactor(w.Profile, w.running) * w.slowdown * sim.Jitter(w.Profile, w.rng)
}

func (w *SimWorker) start(s *simSeq) {
	s.started = true
	w.running++
	w.kvTokens += s.prompt + s.output
	p := w.Profile
	ttft := time.Duration(float64(p.PrefillOverhead+time.Duration(s.prompt)*p.PrefillPerToken) * w.factor())
	s.timer = w.clk.AfterFunc(ttft, func() { w.step(s, 1) })
}

// step emits k tokens and times the next chunk.
func (w *SimWorker) step(s *simSeq, k int) {
	if s.ended {
		return
	}
	s.generated += k
	s.run.onEvent(task.Event{Index: s.key.index, Type: task.EventDelta, Tokens: k})
	if s.ended {
		return
	}
	if s.generated >= s.output {
		w.finish(s, &task.Event{Index: s.key.index, Type: task.EventDone, FinishReason: "length",
			Usage: &task.Usage{PromptTokens: s.prompt, CompletionTokens: s.generated}})
		return
	}
	next := min(max(w.ChunkTokens, 1), s.output-s.generated)
	d := time.Duration(float64(next) * float64(w.Profile.InterTokenLatency) * w.factor())
	s.timer = w.clk.AfterFunc(d, func() { w.step(s, next) })
}

func (w *SimWorker) fail(s *simSeq, e *task.EventError) {
	w.finish(s, &task.Event{Index: s.key.index, Type: task.EventFailed, Error: e})
}

// finish ends s with its final event and admits the next waiting sequence.
func (w *SimWorker) finish(s *simSeq, final *task.Event) {
	if s.ended {
		return
	}
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
	}
	delete(w.seqs, s.key)
	if s.started {
		w.running--
		w.kvTokens -= s.prompt + s.output
	} else {
		for i, q := range w.waiting {
			if q == s {
				w.waiting = append(w.waiting[:i], w.waiting[i+1:]...)
				break
			}
		}
	}
	if s.started && len(w.waiting) > 0 && w.running < w.Profile.MaxNumSeqs {
		next := w.waiting[0]
		w.waiting = w.waiting[1:]
		w.start(next)
	}
	s.run.onEvent(*final)
	s.run.open--
	if s.run.open == 0 {
		s.run.onEnd(nil)
	}
}
