package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// scriptConn is a scripted worker link for tests: each started batch is
// kept until the test drives its events, all on the test's goroutine.
type scriptConn struct {
	url     string
	mu      sync.Mutex
	runs    []*scriptRun
	cancels []string
}

type scriptRun struct {
	batch   *task.Batch
	onEvent func(task.Event)
	onEnd   func(error)
}

var _ StartConn = (*scriptConn)(nil)

func (c *scriptConn) Start(b *task.Batch, onEvent func(task.Event), onEnd func(error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs = append(c.runs, &scriptRun{batch: b, onEvent: onEvent, onEnd: onEnd})
}

func (c *scriptConn) Run(context.Context, *task.Batch, func(task.Event)) error {
	return errors.New("scriptConn: use Start")
}

func (c *scriptConn) Cancel(_ context.Context, batchID string, index int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancels = append(c.cancels, fmt.Sprintf("%s/%d", batchID, index))
	return nil
}

func (c *scriptConn) tasks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.runs {
		n += len(r.batch.Tasks)
	}
	return n
}

// finish streams a short answer for every task of run i and ends it.
func (c *scriptConn) finish(i int) {
	r := c.runs[i]
	for j := range r.batch.Tasks {
		r.onEvent(task.Event{Index: j, Type: task.EventDelta, Text: "hi", Tokens: 1})
		r.onEvent(task.Event{Index: j, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 1}})
	}
	r.onEnd(nil)
}

type harness struct {
	t     *testing.T
	s     *Scheduler
	clk   *clock.Fake
	conns map[string]*scriptConn
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, clk: clock.NewFake(t0), conns: map[string]*scriptConn{}}
	s, err := New(cfg, Deps{
		Clock: h.clk,
		DialWorker: func(w *task.Registered) Conn {
			c := &scriptConn{url: w.URL}
			h.conns[w.URL] = c
			return c
		},
		Rand: rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return h
}

const testModel = "llama3-8b"

var testDigest = fmt.Sprintf("%064x", 1)

func (h *harness) add(id string, slots int, models ...string) *scriptConn {
	if len(models) == 0 {
		models = []string{testModel}
	}
	reg := &task.Registered{WorkerID: id, URL: "http://" + id, MaxConcurrency: slots}
	for _, m := range models {
		reg.Models = append(reg.Models, task.ModelVersion{Name: m, Digest: testDigest, Embeddings: true})
	}
	h.s.Upsert(reg)
	return h.conns[reg.URL]
}

func (h *harness) beat(id string, load task.Load) {
	h.t.Helper()
	if err := h.s.Heartbeat(&task.Heartbeat{WorkerID: id, Time: h.clk.Now(), Load: load}); err != nil {
		h.t.Fatal(err)
	}
}

// result collects what Submit's callbacks deliver.
type result struct {
	events []task.Event
	ended  bool
	err    error
}

func (h *harness) submit(t *task.Task) (*result, *Handle, error) {
	r := &result{}
	hd, err := h.s.Submit(t, func(ev task.Event) { r.events = append(r.events, ev) }, func(err error) { r.ended, r.err = true, err })
	return r, hd, err
}

func chat(id string) *task.Task {
	return &task.Task{RequestID: id, Kind: task.KindChat, Model: testModel,
		Messages: []task.Message{{Role: "user", Content: "hello " + id}}, MaxTokens: 16}
}

func status(err error) (int, string) {
	var e *apierr.Error
	if !errors.As(err, &e) {
		return 0, ""
	}
	return e.Status, e.Code
}

func batchingCfg(maxBatch int) (c batchingConfig) {
	c.MaxBatch = maxBatch
	return c
}

type batchingConfig = batching.Config
