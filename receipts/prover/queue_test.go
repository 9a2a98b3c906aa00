package prover

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestSharedQueueProverKilledMidBatch runs two provers on one Redis
// ledger. The first dies while its worker is countersigning its batch; the
// second takes the job over once it has been idle for ClaimIdle, and every
// receipt ends proven exactly once.
func TestSharedQueueProverKilledMidBatch(t *testing.T) {
	e := newEnv(t)
	r := redistest.New(t)
	st, err := ledger.OpenRedis(context.Background(), r.URL, ledger.RedisOptions{Prefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.ledger = ledger.New(st, ledger.Options{KeyDir: e.keys, Clock: e.clock, Operator: testOperator})
	ctx := context.Background()
	if err := e.ledger.AdmitWorker(ctx, e.wid, model); err != nil {
		t.Fatal(err)
	}
	ids := e.record("q", 10, true) // one batch of 8 and one of 2 (capacity 8 keys)
	e.clock.Advance(time.Second)   // both are due

	var mu sync.Mutex
	signed := map[uint64]int{} // countersignatures given, by batch
	sign := func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		mu.Lock()
		signed[req.Sequence]++
		mu.Unlock()
		return e.signer.Countersign(ctx, req)
	}
	stuck := make(chan struct{})
	var once sync.Once
	first := func(ctx context.Context, id string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		once.Do(func() { close(stuck) })
		<-ctx.Done() // hangs until the prover is killed
		return nil, ctx.Err()
	}
	newProver := func(name string, cs func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error)) *Pipeline {
		p, err := New(e.ledger, Config{KeyDir: e.keys, Clock: e.clock, Countersign: cs,
			Consumer: name, ClaimIdle: 300 * time.Millisecond, Interval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	dyingCtx, kill := context.WithCancel(ctx)
	dying := make(chan error, 1)
	go func() { dying <- newProver("p1", first).Run(dyingCtx) }()
	<-stuck // p1 holds a job, mid-batch
	kill()
	if err := <-dying; err != nil {
		t.Fatal(err)
	}

	survivorCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- newProver("p2", sign).Run(survivorCtx) }()
	// Waiting on the survivor's proofs: bounded, never a timing assertion.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := e.ledger.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Proven == int64(len(ids)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %+v after 60 s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	for _, id := range ids {
		if r := e.receipt(id); r.Status != receipts.StatusProven {
			t.Errorf("%s: %s", id, r.Status)
		}
	}
	n, _ := e.ledger.Counts(ctx)
	if n.Proven != int64(len(ids)) || n.Pending != 0 || n.Failed != 0 {
		t.Errorf("counts %+v: want every receipt proven once", n)
	}
	if j, err := st.Claim(ctx, "check", 0, time.Millisecond); err != nil || j != nil {
		t.Errorf("queue not drained: %+v, %v", j, err)
	}
	for seq, k := range signed {
		if k != 1 {
			t.Errorf("batch %d countersigned %d times by the survivor", seq, k)
		}
	}
}

// TestTwoProversRaceOnRedis: two provers plan and prove one Redis ledger
// at the same time. Each receipt is batched once (AssignBatch is atomic:
// the loser of a race gets ErrNotPending), proven once, and no request is
// countersigned into two batches.
func TestTwoProversRaceOnRedis(t *testing.T) {
	e := newEnv(t)
	r := redistest.New(t)
	st, err := ledger.OpenRedis(context.Background(), r.URL, ledger.RedisOptions{Prefix: r.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.ledger = ledger.New(st, ledger.Options{KeyDir: e.keys, Clock: e.clock, Operator: testOperator})
	ctx := context.Background()
	if err := e.ledger.AdmitWorker(ctx, e.wid, model); err != nil {
		t.Fatal(err)
	}
	ids := e.record("race", 24, true) // three batches of 8
	e.clock.Advance(time.Second)
	var log signedLog
	sign := func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		resp, err := e.signer.Countersign(ctx, req)
		if err == nil {
			log.add(req)
		}
		return resp, err
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, name := range []string{"p1", "p2"} {
		p, err := New(e.ledger, Config{KeyDir: e.keys, Clock: e.clock, Countersign: sign, Consumer: name,
			ClaimIdle: 300 * time.Millisecond, Interval: 20 * time.Millisecond, MaxOpenPerWorker: 2})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Run(runCtx); err != nil {
				t.Error(err)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Minute)
	for n := e.counts(); n.Proven < int64(len(ids)); n = e.counts() {
		if time.Now().After(deadline) || n.Failed > 0 {
			t.Fatalf("counts %+v", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if n := e.counts(); n != (ledger.Counts{Proven: int64(len(ids))}) {
		t.Errorf("counts %+v, want each receipt proven once", n)
	}
	seqs := map[uint64]int{}
	for _, id := range ids {
		r := e.receipt(id)
		if r.Status != receipts.StatusProven {
			t.Fatalf("%s: %s", id, r.Status)
		}
		seqs[r.Batch.Public.Sequence]++
	}
	if len(seqs) != 3 {
		t.Errorf("receipts proven in batches %v, want three batches of 8", seqs)
	}
	log.check(t)
	if j, err := st.Claim(ctx, "check", 0, time.Millisecond); err != nil || j != nil {
		t.Errorf("queue not drained: %+v, %v", j, err)
	}
}
