package prover

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// workerProc is a worker as its process runs it: an agent over its data
// directory, its countersigner behind the registration credential, served
// over HTTP. kill stops it the way kill -9 does: no drain, connections cut,
// nothing but what is already on disk survives.
type workerProc struct {
	t      *testing.T
	dir    string
	key    *keys.Key
	ledger func() *ledger.Ledger
	agent  *workers.Agent
	srv    *httptest.Server
	// hold, when set, is called for a countersign request after the
	// worker has signed it and before the answer is written.
	hold atomic.Pointer[func()]
}

func newCredential() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// start opens the worker and "registers" it: a new URL and a new
// countersign credential in the ledger, as the gateway stores them.
func (w *workerProc) start() {
	w.t.Helper()
	eng, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], Seed: 1, NoDelay: true})
	if err != nil {
		w.t.Fatal(err)
	}
	if w.agent, err = workers.OpenAgent(workers.AgentConfig{WorkerID: w.key.WorkerID(), Engine: eng, DataDir: w.dir}); err != nil {
		w.t.Fatal(err)
	}
	cred := newCredential()
	cs := workers.NewCountersigner(w.key, w.agent, nil, workers.WithCountersignCredential(func() string { return cred }))
	held := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hold := w.hold.Load()
		if hold == nil {
			cs.ServeHTTP(rw, r)
			return
		}
		rec := httptest.NewRecorder()
		cs.ServeHTTP(rec, r) // signed, durably
		(*hold)()
		<-r.Context().Done() // the answer never leaves
	})
	w.srv = httptest.NewServer(workers.NewHandler(w.agent, nil, workers.WithRoute("POST "+workers.PathCountersign, held)))
	ctx := context.Background()
	l := w.ledger()
	if err := l.SetWorkerURL(ctx, w.key.WorkerID(), w.srv.URL); err != nil {
		w.t.Fatal(err)
	}
	if err := l.SetCountersignCredential(ctx, w.key.WorkerID(), cred); err != nil {
		w.t.Fatal(err)
	}
	if err := l.AdmitWorker(ctx, w.key.WorkerID(), w.agent.Models()...); err != nil {
		w.t.Fatal(err)
	}
}

func (w *workerProc) kill() {
	w.srv.CloseClientConnections()
	w.srv.Close()
	w.agent.Close()
}

// produce serves n chat requests and records each completion as the
// gateway does: every receipt ID returned here was acknowledged.
func (w *workerProc) produce(l *ledger.Ledger, prefix string, n int) []string {
	w.t.Helper()
	var ids []string
	for start := 0; start < n; start += 64 {
		b := &task.Batch{ID: fmt.Sprintf("%s-%d", prefix, start)}
		for i := start; i < min(n, start+64); i++ {
			b.Tasks = append(b.Tasks, task.Task{RequestID: fmt.Sprintf("%s-%d", prefix, i), Kind: task.KindChat, Model: "sim-tiny",
				Subject: "key_1", Messages: []task.Message{{Role: "user", Content: fmt.Sprint("hi ", i)}}})
		}
		var mu sync.Mutex
		var done []*task.Completion
		err := w.agent.RunBatch(context.Background(), b, func(ev task.Event) error {
			if ev.Completion != nil {
				mu.Lock()
				done = append(done, ev.Completion)
				mu.Unlock()
			}
			return nil
		})
		if err != nil {
			w.t.Fatal(err)
		}
		for _, c := range done {
			id := "rcpt_" + c.RequestID
			if err := l.Record(context.Background(), id, c); err != nil {
				w.t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	if len(ids) != n {
		w.t.Fatalf("%d completions for %d requests", len(ids), n)
	}
	return ids
}

// proverProc is a prover process over the ledger file.
type proverProc struct {
	stop context.CancelFunc
	done chan error
}

// TestBacklogSurvivesRestarts is the acceptance test of finding 6 in
// small: a backlog of acknowledged receipts, the prover stopped (SIGTERM)
// mid-backlog, the worker killed (kill -9) right after it signed a batch
// and before its answer left, the prover killed while the worker is down,
// both restarted from their data directories. Every acknowledged receipt
// ends proven, exactly once, none failed, no request countersigned into
// two batches, and never more than MaxOpenPerWorker batches open.
func TestBacklogSurvivesRestarts(t *testing.T) {
	const n = 120 // 15 batches of capacity 8; `scripts/soak-backlog.sh` runs 50,000 across real processes
	keys := keyDir(t)
	path := filepath.Join(t.TempDir(), "receipts.db")
	var (
		mu sync.Mutex
		l  *ledger.Ledger
	)
	openLedger := func() {
		st, err := ledger.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		l = ledger.New(st, ledger.Options{KeyDir: keys, Operator: testOperator})
		mu.Unlock()
	}
	current := func() *ledger.Ledger {
		mu.Lock()
		defer mu.Unlock()
		return l
	}
	openLedger()
	key := testKeyFor(t, 11)
	w := &workerProc{t: t, dir: t.TempDir(), key: key, ledger: current}
	w.start()
	ids := w.produce(current(), "bk", n)

	var maxOpen atomic.Int64
	startProver := func() *proverProc {
		l := current()
		p, err := New(l, Config{KeyDir: keys, MaxAge: time.Millisecond, Interval: 10 * time.Millisecond,
			BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond, CountersignTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		inner := p.cfg.Countersign
		p.cfg.Countersign = func(ctx context.Context, id string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			if open, err := l.Store().OpenBatches(ctx); err == nil && int64(len(open)) > maxOpen.Load() {
				maxOpen.Store(int64(len(open)))
			}
			return inner(ctx, id, req)
		}
		ctx, cancel := context.WithCancel(context.Background())
		pp := &proverProc{stop: cancel, done: make(chan error, 1)}
		go func() { pp.done <- p.Run(ctx) }()
		return pp
	}
	counts := func() ledger.Counts {
		c, err := current().Counts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Waiting on real processes: bounded, never a timing assertion.
	waitFor := func(what string, cond func(ledger.Counts) bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for c := counts(); !cond(c); c = counts() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: counts %+v after 3 minutes", what, c)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// 1. SIGTERM the prover once a batch is proven.
	p := startProver()
	waitFor("first batch", func(c ledger.Counts) bool { return c.Proven >= 8 })
	p.stop()
	if err := <-p.done; err != nil {
		t.Fatal(err)
	}
	if c := counts(); c.Failed != 0 || c.Proven+c.Pending != n || c.Pending == 0 {
		t.Fatalf("after SIGTERM: %+v", c)
	}

	// 2. Kill -9 the worker just after it signed a batch, before its
	// answer left; the restarted prover keeps retrying a dead worker.
	signed := make(chan struct{})
	var once sync.Once
	hold := func() { once.Do(func() { close(signed) }) }
	w.hold.Store(&hold)
	p = startProver()
	<-signed
	w.kill()

	// 3. Kill the prover while the worker is down (nothing graceful: the
	// store is dropped and reopened, as by a new process).
	p.stop()
	<-p.done
	current().Store().Close()
	openLedger()
	if c := counts(); c.Failed != 0 || c.Proven+c.Pending != n {
		t.Fatalf("after kill -9 of worker and prover: %+v", c)
	}

	// 4. Both come back from their data directories.
	w.hold.Store(nil)
	w.start()
	defer w.kill()
	p = startProver()
	waitFor("every receipt", func(c ledger.Counts) bool { return c.Proven == n || c.Failed > 0 })
	p.stop()
	<-p.done

	if c := counts(); c != (ledger.Counts{Proven: n}) {
		t.Fatalf("counts %+v, want all %d proven, none failed", c, n)
	}
	if m := maxOpen.Load(); m > 4 {
		t.Errorf("%d batches open at once for one worker, want at most 4", m)
	}
	checkExactlyOnce(t, current(), w.agent, ids)
}

func testKeyFor(t *testing.T, seed byte) *keys.Key {
	t.Helper()
	b := make([]byte, 64)
	for i := range b {
		b[i] = seed + byte(i)
	}
	k, err := keys.Generate(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkExactlyOnce: every receipt is proven and verifies; the export lists
// each request once; the worker countersigned each request in exactly one
// batch, the one its receipt is proven in.
func checkExactlyOnce(t *testing.T, l *ledger.Ledger, signer workers.CountersignLog, ids []string) {
	t.Helper()
	ctx := context.Background()
	reg, err := l.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var reqIDs []string
	for after := ""; ; {
		page, next, err := l.Export(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page {
			var r receipts.Receipt
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if seen[r.RequestID] {
				t.Errorf("export lists request %s twice", r.RequestID)
			}
			seen[r.RequestID] = true
			reqIDs = append(reqIDs, r.RequestID)
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(seen) != len(ids) {
		t.Errorf("export lists %d requests, want %d", len(seen), len(ids))
	}
	sigs := signer.Signed(reqIDs)
	vks := map[string]*receipts.VerifyingKey{}
	for _, id := range ids {
		raw, err := l.Receipt(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var r receipts.Receipt
		json.Unmarshal(raw, &r)
		if r.Status != receipts.StatusProven {
			t.Errorf("%s: %s %q", id, r.Status, r.Error)
			continue
		}
		vk := vks[r.Batch.VerifyingKeyID]
		if vk == nil {
			b, err := l.VerifyingKey(ctx, r.Batch.VerifyingKeyID)
			if err != nil {
				t.Fatal(err)
			}
			if vk, err = receipts.ParseVerifyingKey(b); err != nil {
				t.Fatal(err)
			}
			vks[r.Batch.VerifyingKeyID] = vk
		}
		if err := receipts.Verify(&r, vk, reg.Root()); err != nil {
			t.Errorf("%s does not verify: %v", id, err)
		}
		s := sigs[r.RequestID]
		if s == nil || s.Sequence != r.Batch.Public.Sequence || s.Root != r.Batch.Public.Root {
			t.Errorf("%s: proven in batch %d, the worker signed it in %+v", id, r.Batch.Public.Sequence, s)
		}
	}
}
