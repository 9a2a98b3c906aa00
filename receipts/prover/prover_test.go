package prover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
	"github.com/tollgate-ai/tollgate/zk"
)

type producedMap map[string]*task.Completion

func (m producedMap) Produced(id string) (*task.Completion, bool) {
	c, ok := m[id]
	if !ok {
		return nil, false
	}
	cp := *c
	return &cp, true
}

func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// keyDir is a key directory holding only the cached capacity-8 keys of
// zk.TestKeyDir (which may also hold larger ones other tests set up): the
// prover uses every capacity it finds, and proving 64 or 256 leaves is
// far too slow for a unit test.
func keyDir(t testing.TB) string {
	t.Helper()
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pk, vk := zk.KeyFiles(zk.TestKeyDir(), 8)
	for _, f := range []string{pk, vk} {
		if err := os.Symlink(f, filepath.Join(dir, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type env struct {
	t      testing.TB
	keys   string
	path   string
	ledger *ledger.Ledger
	clock  *clock.Fake
	key    *keys.Key
	wid    string
	own    producedMap
	signer *workers.Countersigner
}

var model = task.ModelVersion{Name: "llama3-8b", Digest: digest("weights")}

func newEnv(t testing.TB) *env {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 5))
	seed := make([]byte, 64)
	for i := range seed {
		seed[i] = byte(r.Uint32())
	}
	key, err := keys.Generate(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, keys: keyDir(t), path: filepath.Join(t.TempDir(), "ledger.db"), clock: clock.NewFake(time.Unix(1800000000, 0)),
		key: key, wid: key.WorkerID(), own: producedMap{}}
	e.signer = workers.NewCountersigner(key, e.own, nil)
	e.open()
	if err := e.ledger.AdmitWorker(context.Background(), e.wid, model); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) open() {
	st, err := ledger.OpenBolt(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ledger = ledger.New(st, ledger.Options{KeyDir: e.keys, Clock: e.clock, Operator: testOperator})
	e.t.Cleanup(func() { st.Close() })
}

// record makes the worker produce n completions and the gateway record them.
func (e *env) record(prefix string, n int, produced bool) []string {
	var ids []string
	for i := range n {
		reqID := fmt.Sprintf("%s-%d", prefix, i)
		c := &task.Completion{RequestID: reqID, WorkerID: e.wid, Model: model.Name, ModelDigest: model.Digest,
			RequestDigest: digest("rq" + reqID), ResponseDigest: digest("rs" + reqID), Subject: "key_1",
			PromptTokens: 7 + i, CompletionTokens: 30 + i, Time: e.clock.Now().UTC()}
		if produced {
			e.own[reqID] = c
		}
		id := "rcpt_" + reqID
		if err := e.ledger.Record(context.Background(), id, c); err != nil {
			e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (e *env) pipeline(countersign func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error)) *Pipeline {
	if countersign == nil {
		countersign = func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return e.signer.Countersign(ctx, req)
		}
	}
	p, err := New(e.ledger, Config{KeyDir: e.keys, MaxAge: time.Second, Clock: e.clock, Countersign: countersign, Random: half})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// half is a fixed backoff jitter: every wait is 3/4 of its delay.
func half() float64 { return 0.5 }

func (e *env) receipt(id string) *receipts.Receipt {
	raw, err := e.ledger.Receipt(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var r receipts.Receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		e.t.Fatal(err)
	}
	return &r
}

func (e *env) verifyingKey(id string) *receipts.VerifyingKey {
	b, err := e.ledger.VerifyingKey(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	vk, err := receipts.ParseVerifyingKey(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return vk
}

func TestProvenReceiptVerifiesAndTamperingFails(t *testing.T) {
	e := newEnv(t)
	ids := e.record("a", 3, true)
	p := e.pipeline(nil)
	ctx := context.Background()
	if n, err := p.Step(ctx); err != nil || n != 0 {
		t.Fatalf("fresh leaves: proved %d, err %v; want nothing before MaxAge", n, err)
	}
	e.clock.Advance(time.Second)
	if n, err := p.Step(ctx); err != nil || n != 3 {
		t.Fatalf("proved %d, err %v; want 3", n, err)
	}
	reg, _ := e.ledger.Registry(ctx)
	root := reg.Root()
	for _, id := range ids {
		r := e.receipt(id)
		if r.Status != receipts.StatusProven {
			t.Fatalf("%s: status %s", id, r.Status)
		}
		if err := receipts.Verify(r, e.verifyingKey(r.Batch.VerifyingKeyID), root); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}

	base := e.receipt(ids[1])
	vk := e.verifyingKey(base.Batch.VerifyingKeyID)
	otherRoot := receipts.ModelVersionCommitment("x", sha256.Sum256(nil))
	tests := []struct {
		name   string
		tamper func(r *receipts.Receipt)
		root   bool // tamper the trusted registry root instead
		want   error
	}{
		{"request id", func(r *receipts.Receipt) { r.RequestID += "x" }, false, receipts.ErrPath},
		{"request digest", func(r *receipts.Receipt) { r.RequestDigest = digest("x") }, false, receipts.ErrPath},
		{"response digest", func(r *receipts.Receipt) { r.ResponseDigest = digest("x") }, false, receipts.ErrPath},
		{"subject", func(r *receipts.Receipt) { r.Subject = "key_2" }, false, receipts.ErrPath},
		{"time", func(r *receipts.Receipt) { r.Time = r.Time.Add(time.Millisecond) }, false, receipts.ErrPath},
		{"prompt tokens", func(r *receipts.Receipt) { r.PromptTokens++ }, false, receipts.ErrPath},
		{"completion tokens", func(r *receipts.Receipt) { r.CompletionTokens-- }, false, receipts.ErrPath},
		{"stated leaf", func(r *receipts.Receipt) { r.Leaf = r.ModelVersion }, false, receipts.ErrLeafMismatch},
		{"model name", func(r *receipts.Receipt) { r.Model = "llama3-70b" }, false, receipts.ErrModelVersion},
		{"model digest", func(r *receipts.Receipt) { r.ModelDigest = digest("x") }, false, receipts.ErrModelVersion},
		{"batch model version", func(r *receipts.Receipt) { r.Batch.Public.ModelVersion = receipts.ElementHex(otherRoot) }, false, receipts.ErrModelVersion},
		{"worker", func(r *receipts.Receipt) { r.WorkerID = r.Batch.Public.Root }, false, receipts.ErrWorker},
		{"path sibling", func(r *receipts.Receipt) { r.Batch.Path[1] = r.Batch.Path[0] }, false, receipts.ErrPath},
		{"path index", func(r *receipts.Receipt) { r.Batch.Index = 0 }, false, receipts.ErrPath},
		{"path length", func(r *receipts.Receipt) { r.Batch.Path = r.Batch.Path[:2] }, false, receipts.ErrMalformedBatch},
		{"total prompt", func(r *receipts.Receipt) { r.Batch.Public.TotalPromptTokens++ }, false, receipts.ErrProof},
		{"total completion", func(r *receipts.Receipt) { r.Batch.Public.TotalCompletionTokens += 100 }, false, receipts.ErrProof},
		{"leaf count", func(r *receipts.Receipt) { r.Batch.Public.LeafCount = 2 }, false, receipts.ErrProof},
		{"sequence", func(r *receipts.Receipt) { r.Batch.Public.Sequence++ }, false, receipts.ErrProof},
		{"batch worker", func(r *receipts.Receipt) {
			r.Batch.Public.WorkerID = r.Batch.Public.Root
			r.WorkerID = r.Batch.Public.Root
		}, false, receipts.ErrProof},
		{"proof bytes", func(r *receipts.Receipt) {
			b, _ := base64.StdEncoding.DecodeString(r.Batch.Proof)
			b[40] ^= 1
			r.Batch.Proof = base64.StdEncoding.EncodeToString(b)
		}, false, receipts.ErrProof},
		{"registry root", func(r *receipts.Receipt) {}, true, receipts.ErrRegistryRoot},
		{"not proven", func(r *receipts.Receipt) { r.Status = receipts.StatusPending }, false, receipts.ErrNotProven},
		{"version", func(r *receipts.Receipt) { r.Version = 2 }, false, receipts.ErrVersion},
		{"vk id", func(r *receipts.Receipt) { r.Batch.VerifyingKeyID += "x" }, false, receipts.ErrVerifyingKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := json.Marshal(base)
			var r receipts.Receipt
			json.Unmarshal(raw, &r)
			if tt.want == receipts.ErrProof {
				r.Batch.Calldata = "" // a forger drops the convenience copy; the proof must still catch it
			}
			tt.tamper(&r)
			if tt.want == receipts.ErrPath {
				// A forger restates the leaf too; the path must still catch it.
				if _, _, leaf, err := r.LeafFields(); err == nil {
					r.Leaf = receipts.ElementHex(leaf)
				}
			}
			trusted := root
			if tt.root {
				trusted = otherRoot
			}
			err := receipts.Verify(&r, vk, trusted)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestWorkerRefusesForeignLeaf: a record the worker never produced fails,
// with the worker's reason, and alone: the old prover failed the whole
// batch, so the good receipts batched with it were lost.
func TestWorkerRefusesForeignLeaf(t *testing.T) {
	e := newEnv(t)
	good := e.record("good", 3, true)
	forged := e.record("forged", 1, false) // recorded by the gateway, never produced by the worker
	e.clock.Advance(time.Second)
	p := e.pipeline(nil)
	ctx := context.Background()
	if _, err := p.Step(ctx); err != nil {
		t.Fatal(err)
	}
	r := e.receipt(forged[0])
	if r.Status != receipts.StatusFailed {
		t.Fatalf("status %s, want failed", r.Status)
	}
	if want := "not produced by this worker"; !strings.Contains(r.Error, want) || !strings.Contains(r.Error, workers.RefuseUnknownRecord) {
		t.Errorf("error %q does not give the worker's reason %q", r.Error, want)
	}
	if r := e.receipt(good[0]); r.Status != receipts.StatusPending || !strings.Contains(r.PendingReason, "re-cut") {
		t.Fatalf("good receipt after the refusal: %s %q, want pending, re-cut", r.Status, r.PendingReason)
	}
	if _, err := p.Step(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range good {
		if r := e.receipt(id); r.Status != receipts.StatusProven {
			t.Errorf("%s: %s, want proven", id, r.Status)
		}
	}
	n, _ := e.ledger.Counts(ctx)
	if n != (ledger.Counts{Proven: 3, Failed: 1}) {
		t.Errorf("counts %+v, want 3 proven, 1 failed", n)
	}
}

func TestResumeAfterCrashProvesEachReceiptOnce(t *testing.T) {
	e := newEnv(t)
	ids := e.record("c", 5, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()

	// First run: the batch is assigned, then the prover dies before proving.
	crash, stop := context.WithCancel(ctx)
	p := e.pipeline(func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		stop() // killed while it waits for the worker
		return nil, context.Canceled
	})
	if _, err := p.Step(crash); err != nil {
		t.Fatal(err)
	}
	open, _ := e.ledger.Store().OpenBatches(ctx)
	if len(open) != 1 {
		t.Fatalf("%d open batches after the crash, want 1", len(open))
	}
	e.ledger.Store().Close()

	// Restart on the same file: the open batch is resumed, nothing is re-batched.
	e.open()
	more := e.record("d", 2, true)
	e.clock.Advance(time.Second)
	p = e.pipeline(nil)
	n, err := p.Step(ctx)
	if err != nil || n != 7 {
		t.Fatalf("proved %d, err %v; want 7", n, err)
	}
	if n, _ := p.Step(ctx); n != 0 {
		t.Fatalf("second pass proved %d more", n)
	}
	seen := map[string]uint64{}
	for _, id := range append(ids, more...) {
		r := e.receipt(id)
		if r.Status != receipts.StatusProven {
			t.Fatalf("%s: %s", id, r.Status)
		}
		seen[id] = r.Batch.Public.Sequence
	}
	if seen[ids[0]] != 1 || seen[more[0]] != 2 {
		t.Errorf("batch sequences %v: want the resumed batch 1 and the new one 2", seen)
	}
	pending, _ := e.ledger.Store().Pending(ctx)
	open, _ = e.ledger.Store().OpenBatches(ctx)
	if len(pending) != 0 || len(open) != 0 {
		t.Errorf("%d pending, %d open after resume", len(pending), len(open))
	}
}

// TestCountersignOverHTTP: the default countersign call presents the
// credential the ledger holds for the worker.
func TestCountersignOverHTTP(t *testing.T) {
	e := newEnv(t)
	const cred = "c0ffee00c0ffee00c0ffee00c0ffee00"
	signer := workers.NewCountersigner(e.key, e.own, nil, workers.WithCountersignCredential(func() string { return cred }))
	srv := httptest.NewServer(workers.NewHandler(nil, nil, workers.WithRoute("POST "+workers.PathCountersign, signer)))
	defer srv.Close()
	ctx := context.Background()
	if err := e.ledger.SetWorkerURL(ctx, e.wid, srv.URL); err != nil {
		t.Fatal(err)
	}
	if err := e.ledger.SetCountersignCredential(ctx, e.wid, cred); err != nil {
		t.Fatal(err)
	}
	ids := e.record("h", 2, true)
	e.clock.Advance(time.Second)
	p, err := New(e.ledger, Config{KeyDir: e.keys, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Step(ctx); err != nil || n != 2 {
		t.Fatalf("proved %d, err %v", n, err)
	}
	if r := e.receipt(ids[1]); r.Status != receipts.StatusProven {
		t.Fatalf("status %s", r.Status)
	}
}
