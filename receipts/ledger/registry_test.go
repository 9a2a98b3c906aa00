package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

func operatorKey(t testing.TB, seed byte) *receipts.OperatorKey {
	k, err := receipts.GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func workerN(i int) string {
	var e fr.Element
	e.SetUint64(uint64(1000 + i))
	return receipts.ElementHex(e)
}

func mvOf(v task.ModelVersion) fr.Element {
	d, _ := receipts.ParseDigest(v.Digest)
	return receipts.ModelVersionCommitment(v.Name, d)
}

type registryEnv struct {
	l     *Ledger
	clk   *clock.Fake
	op    *receipts.OperatorKey
	store Store
}

func newRegistryEnv(t *testing.T) *registryEnv {
	st, err := OpenBolt(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &registryEnv{clk: clock.NewFake(time.Unix(1800000000, 0).UTC()), op: operatorKey(t, 1), store: st}
	e.l = New(st, Options{Clock: e.clk, Operator: e.op})
	return e
}

// verified returns the published history, verified under the operator key.
func (e *registryEnv) verified(t *testing.T) (*receipts.RootHistory, *receipts.Roots) {
	t.Helper()
	h, err := e.l.RootHistory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(h)
	parsed, err := receipts.ParseRootHistory(b)
	if err != nil {
		t.Fatalf("published history is not canonical: %v", err)
	}
	roots, err := parsed.Verify(e.op.Public())
	if err != nil {
		t.Fatal(err)
	}
	return h, roots
}

// checkAdmitted asserts that the pair is (or is not) in the root in force
// at t, both per the ledger (AdmissionAt) and per the verified history.
func (e *registryEnv) checkAdmitted(t *testing.T, at time.Time, worker string, v task.ModelVersion, want bool) {
	t.Helper()
	_, roots := e.verified(t)
	adm, err := e.l.AdmissionAt(context.Background(), at, worker, mvOf(v))
	if !want {
		if !errors.Is(err, ErrNotAdmitted) {
			t.Fatalf("%s/%s at %s: err = %v, want ErrNotAdmitted", worker, v.Name, at, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s/%s at %s: %v", worker, v.Name, at, err)
	}
	inForce, _, err := roots.RootAt(at)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := receipts.ParseElement(worker)
	got := receipts.RootFromPath(receipts.AdmissionLeaf(w, mvOf(v)), adm.Index, adm.Path)
	if !got.Equal(&inForce) || !adm.Root.Equal(&inForce) {
		t.Fatalf("%s/%s at %s: path leads to %s, root in force %s", worker, v.Name, at, receipts.ElementHex(got), receipts.ElementHex(inForce))
	}
}

func TestAdmitRevokeReinstate(t *testing.T) {
	e := newRegistryEnv(t)
	ctx := context.Background()
	a := task.ModelVersion{Name: "a", Digest: digest("a")}
	b := task.ModelVersion{Name: "b", Digest: digest("b")}
	w1, w2 := workerN(1), workerN(2)

	if _, err := e.l.RootHistory(ctx); err == nil {
		t.Fatal("history before any admission")
	}
	t1 := e.clk.Now()
	if err := e.l.AdmitWorker(ctx, w1, a, b); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	if err := e.l.AdmitWorker(ctx, w2, a); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	if err := e.l.AdmitWorker(ctx, w1, a, b); err != nil { // registering again admits nothing new
		t.Fatal(err)
	}
	h, _ := e.verified(t)
	if len(h.Entries) != 2 {
		t.Fatalf("%d entries, want 2 (a known pair adds none)", len(h.Entries))
	}
	e.checkAdmitted(t, t1, w1, b, true)
	e.checkAdmitted(t, t1, w2, a, false) // admitted a minute later
	e.checkAdmitted(t, t1.Add(-time.Nanosecond), w1, a, false)
	e.checkAdmitted(t, e.clk.Now(), w2, a, true)

	// Revoke w1 for model b only: a later entry whose root lacks the pair.
	e.clk.Advance(time.Minute)
	tRevoke := e.clk.Now()
	removed, err := e.l.Revoke(ctx, w1, "b", "")
	if err != nil || len(removed) != 1 || removed[0].Model != "b" {
		t.Fatalf("revoke: %v %+v", err, removed)
	}
	e.checkAdmitted(t, tRevoke.Add(-time.Nanosecond), w1, b, true) // batches cut before still prove
	e.checkAdmitted(t, tRevoke, w1, b, false)
	e.checkAdmitted(t, tRevoke, w1, a, true)

	// The revoked worker cannot re-admit itself by registering again.
	e.clk.Advance(time.Minute)
	var rev *RevokedError
	if err := e.l.AdmitWorker(ctx, w1, a, b); !errors.As(err, &rev) || len(rev.Versions) != 1 || rev.Versions[0].Name != "b" {
		t.Fatalf("re-admission of a revoked pair: %v", err)
	}
	e.checkAdmitted(t, e.clk.Now(), w1, b, false)
	if err := e.l.AdmitWorker(ctx, w1, a); err != nil { // without the revoked model it registers
		t.Fatal(err)
	}

	// Revoking the whole worker removes every pair of it. (A second on:
	// the heads checkAdmitted published speak for up to now, so an entry
	// made now would be dated after them.)
	e.clk.Advance(time.Second)
	if removed, err := e.l.Revoke(ctx, w1, "", ""); err != nil || len(removed) != 1 {
		t.Fatalf("revoke all: %v %+v", err, removed)
	}
	e.checkAdmitted(t, e.clk.Now(), w1, a, false)
	e.checkAdmitted(t, e.clk.Now(), w2, a, true)

	// Reinstating only model b leaves the whole-worker denial in force.
	left, err := e.l.Reinstate(ctx, w1, "b", "")
	if err != nil || len(left) != 1 || left[0].Model != "" {
		t.Fatalf("reinstate b: %v %+v", err, left)
	}
	if err := e.l.AdmitWorker(ctx, w1, a); !errors.As(err, &rev) {
		t.Fatalf("admitted under a whole-worker denial: %v", err)
	}
	if left, err := e.l.Reinstate(ctx, w1, "", ""); err != nil || len(left) != 0 {
		t.Fatalf("reinstate all: %v %+v", err, left)
	}
	e.clk.Advance(time.Minute)
	if err := e.l.AdmitWorker(ctx, w1, a, b); err != nil {
		t.Fatal(err)
	}
	e.checkAdmitted(t, e.clk.Now(), w1, b, true)
	e.checkAdmitted(t, tRevoke, w1, b, false) // history does not change

	pairs, denied, _ := e.l.Admitted(ctx)
	if len(pairs) != 3 || len(denied) != 0 {
		t.Errorf("pairs %+v denied %+v", pairs, denied)
	}

	// A fresh process on the same store rebuilds the same trees.
	l2 := New(e.store, Options{Clock: e.clk, Operator: e.op})
	for _, at := range []time.Time{t1, tRevoke, e.clk.Now()} {
		a1, err1 := e.l.AdmissionAt(ctx, at, w2, mvOf(a))
		a2, err2 := l2.AdmissionAt(ctx, at, w2, mvOf(a))
		if (err1 == nil) != (err2 == nil) || err1 == nil && !a1.Root.Equal(&a2.Root) {
			t.Errorf("at %s: %v/%v", at, err1, err2)
		}
	}
}

func TestAdmitRefuses(t *testing.T) {
	e := newRegistryEnv(t)
	ctx := context.Background()
	a := task.ModelVersion{Name: "a", Digest: digest("a")}
	for name, f := range map[string]func() error{
		"bad digest": func() error {
			return e.l.AdmitWorker(ctx, workerN(1), task.ModelVersion{Name: "c", Digest: "nothex"})
		},
		"worker ID not hex": func() error { return e.l.AdmitWorker(ctx, "0xzz", a) },
		"worker ID short":   func() error { return e.l.AdmitWorker(ctx, "0x1", a) },
		"worker ID >= r": func() error {
			return e.l.AdmitWorker(ctx, "0x"+digest("x")[:0]+"30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001", a)
		},
		"unnamed model":        func() error { return e.l.AdmitWorker(ctx, workerN(1), task.ModelVersion{Digest: digest("a")}) },
		"revoke bad digest":    func() error { _, err := e.l.Revoke(ctx, workerN(1), "a", "ABC"); return err },
		"revoke bad worker":    func() error { _, err := e.l.Revoke(ctx, "worker", "", ""); return err },
		"reinstate bad worker": func() error { _, err := e.l.Reinstate(ctx, "", "", ""); return err },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Without the operator key the registry cannot change.
	ro := New(e.store, Options{Clock: e.clk})
	if err := ro.AdmitWorker(ctx, workerN(1), a); !errors.Is(err, ErrNoOperatorKey) {
		t.Errorf("admit without operator key: %v", err)
	}
	// Another operator key cannot extend this history.
	if err := e.l.AdmitWorker(ctx, workerN(1), a); err != nil {
		t.Fatal(err)
	}
	other := New(e.store, Options{Clock: e.clk, Operator: operatorKey(t, 2)})
	if err := other.AdmitWorker(ctx, workerN(2), a); err == nil {
		t.Error("a second operator key extended the history")
	}
	if h, err := ro.RootHistory(ctx); err != nil || h.Head != nil || len(h.Entries) != 1 {
		t.Errorf("read-only history: %+v %v", h, err)
	}
}

// TestRegistryConcurrentReplicas: two replicas admitting workers at once
// through one Redis append to one valid chain, losing no pair.
func TestRegistryConcurrentReplicas(t *testing.T) {
	r := redistest.New(t)
	ctx := context.Background()
	op := operatorKey(t, 1)
	var ledgers []*Ledger
	for range 2 {
		st, err := OpenRedis(ctx, r.URL, RedisOptions{Prefix: r.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		ledgers = append(ledgers, New(st, Options{Operator: op}))
	}
	const perReplica = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*perReplica)
	for i, l := range ledgers {
		wg.Go(func() {
			for j := range perReplica {
				name := fmt.Sprintf("model-%d-%d", i, j)
				if err := l.AdmitWorker(ctx, workerN(i), task.ModelVersion{Name: name, Digest: digest(name)}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pairs, _, err := ledgers[1].Admitted(ctx)
	if err != nil || len(pairs) != 2*perReplica {
		t.Fatalf("%d pairs (%v), want %d", len(pairs), err, 2*perReplica)
	}
	h, err := ledgers[0].RootHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := h.Verify(op.Public())
	if err != nil || roots.Len() != 2*perReplica {
		t.Fatalf("history: %v, %d entries", err, len(h.Entries))
	}
	tree, _ := ledgers[1].Registry(ctx)
	last, _, _ := roots.RootAt(roots.AsOf())
	if got := tree.Root(); !got.Equal(&last) {
		t.Error("current tree differs from the last signed root")
	}
}

// BenchmarkAdmissionAt measures the prover's registry lookup with 3,000
// admitted pairs: the current root (cached tree) and an older root (tree
// rebuilt from the recorded changes, then cached).
func BenchmarkAdmissionAt(b *testing.B) {
	st, err := OpenBolt(filepath.Join(b.TempDir(), "l.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	clk := clock.NewFake(time.Unix(1800000000, 0).UTC())
	l := New(st, Options{Clock: clk, Operator: operatorKey(b, 1)})
	ctx := context.Background()
	const workersN, models = 300, 10
	var vs []task.ModelVersion
	for j := range models {
		vs = append(vs, task.ModelVersion{Name: fmt.Sprint("m", j), Digest: digest(fmt.Sprint(j))})
	}
	start := time.Now()
	for i := range workersN {
		clk.Advance(time.Second)
		if err := l.AdmitWorker(ctx, workerN(i), vs...); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%d pairs: %.1f ms per admission of %d pairs (fsync'd)", workersN*models, float64(time.Since(start).Microseconds())/workersN/1000, models)
	fresh := New(st, Options{Clock: clk})
	start = time.Now()
	if _, err := fresh.Registry(ctx); err != nil {
		b.Fatal(err)
	}
	b.Logf("rebuilding the tree from the stored pairs: %s", time.Since(start).Round(time.Millisecond))
	mv := mvOf(vs[3])
	b.Run("current", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.AdmissionAt(ctx, clk.Now(), workerN(100), mv); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("past", func(b *testing.B) {
		b.ReportAllocs()
		at := time.Unix(1800000000, 0).Add(200 * time.Second)
		for b.Loop() {
			if _, err := l.AdmissionAt(ctx, at, workerN(100), mv); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRegistryConcurrentInOneProcess: admissions, revocations and lookups
// racing on one ledger (run with -race) leave one valid chain.
func TestRegistryConcurrentInOneProcess(t *testing.T) {
	e := newRegistryEnv(t)
	ctx := context.Background()
	v := task.ModelVersion{Name: "a", Digest: digest("a")}
	if err := e.l.AdmitWorker(ctx, workerN(0), v); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 10 {
				w := workerN(1 + g*10 + i)
				if err := e.l.AdmitWorker(ctx, w, v); err != nil {
					t.Error(err)
				}
				if i%3 == 0 {
					if _, err := e.l.Revoke(ctx, w, "", ""); err != nil {
						t.Error(err)
					}
				}
				if _, err := e.l.AdmissionAt(ctx, e.clk.Now().Add(time.Hour), workerN(0), mvOf(v)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	_, roots := e.verified(t)
	pairs, denied, _ := e.l.Admitted(ctx)
	if len(pairs) != 1+40-16 || len(denied) != 16 || roots.Len() != 1+40+16 {
		t.Errorf("%d pairs, %d denied, %d entries", len(pairs), len(denied), roots.Len())
	}
}

// TestRevokeKey: a key revoked from a time in the past is listed in the
// signed history (a batch dated from then on is refused by verifiers under
// any root), its pairs leave the registry, and it cannot be reinstated.
func TestRevokeKey(t *testing.T) {
	e := newRegistryEnv(t)
	ctx := context.Background()
	a := task.ModelVersion{Name: "a", Digest: digest("a")}
	w := workerN(1)
	if err := e.l.AdmitWorker(ctx, w, a); err != nil {
		t.Fatal(err)
	}
	admitted := e.clk.Now()
	e.clk.Advance(time.Hour)
	compromised := admitted.Add(10 * time.Minute)
	if _, err := e.l.RevokeKey(ctx, w, e.clk.Now().Add(time.Second)); err == nil {
		t.Error("revocation from the future accepted")
	}
	removed, err := e.l.RevokeKey(ctx, w, compromised)
	if err != nil || len(removed) != 1 {
		t.Fatalf("revoke key: %v %+v", err, removed)
	}
	_, roots := e.verified(t)
	if _, revoked := roots.KeyRevoked(w, compromised.Add(-time.Nanosecond)); revoked {
		t.Error("revoked before its from")
	}
	if _, revoked := roots.KeyRevoked(w, compromised); !revoked {
		t.Error("key not revoked from its from")
	}
	e.checkAdmitted(t, e.clk.Now(), w, a, false)
	if left, err := e.l.Reinstate(ctx, w, "", ""); err != nil || len(left) != 1 || !left[0].Burned {
		t.Fatalf("reinstate of a burned key: %v %+v", err, left)
	}
	var rev *RevokedError
	if err := e.l.AdmitWorker(ctx, w, a); !errors.As(err, &rev) {
		t.Fatalf("burned key admitted again: %v", err)
	}
	// A key with no pair left can still be burned (the entry is signed
	// even though the root does not change).
	if _, err := e.l.RevokeKey(ctx, workerN(2), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.verified(t); len(h.Entries) != 3 || len(h.Entries[2].Revoked) != 1 || h.Entries[2].Root != h.Entries[1].Root {
		t.Errorf("entries %+v", h.Entries)
	}
}

// TestHeadNeverPrecedesALaterEntry: a signed head says "as of A, entry n
// is the last", so every later entry must be dated after A; otherwise a
// verifier holding that head judges batches in (entry n+1's time, A]
// against entry n's root, which still admits a pair the operator revoked.
// A replica whose clock runs ahead signed such a head, and a replica with
// the right clock then dated its revocation before it.
func TestHeadNeverPrecedesALaterEntry(t *testing.T) {
	e := newRegistryEnv(t)
	ctx := context.Background()
	a := task.ModelVersion{Name: "a", Digest: digest("a")}
	w := workerN(1)
	if err := e.l.AdmitWorker(ctx, w, a); err != nil {
		t.Fatal(err)
	}
	fastClk := clock.NewFake(e.clk.Now().Add(time.Minute))
	fast := New(e.store, Options{Clock: fastClk, Operator: e.op})
	old, err := fast.RootHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(10 * time.Second)
	if removed, err := e.l.Revoke(ctx, w, "", ""); err != nil || len(removed) != 1 {
		t.Fatalf("revoke: %v %+v", err, removed)
	}
	h, roots := e.verified(t)
	rev := h.Entries[len(h.Entries)-1]
	if !rev.Time.After(old.Head.AsOf) {
		t.Errorf("entry %d dated %s, but a head signed earlier says entry %d is the last as of %s",
			rev.Seq, rev.Time.Format(time.RFC3339Nano), old.Head.Seq, old.Head.AsOf.Format(time.RFC3339Nano))
	}
	// The two signed histories must agree on every time both speak for.
	b, _ := json.Marshal(old)
	parsed, _ := receipts.ParseRootHistory(b)
	oldRoots, err := parsed.Verify(e.op.Public())
	if err != nil {
		t.Fatal(err)
	}
	at := old.Head.AsOf
	r1, _, err1 := oldRoots.RootAt(at)
	r2, _, err2 := roots.RootAt(at)
	if err1 != nil || err2 != nil || !r1.Equal(&r2) {
		t.Errorf("at %s the old head's history has root %s, the new one %s (%v, %v)", at.Format(time.RFC3339Nano),
			receipts.ElementHex(r1), receipts.ElementHex(r2), err1, err2)
	}
}

// TestRegistryConcurrentAdmissionsOneProcess: a fleet registering at once
// on one gateway. Before, every admission raced the others through the
// store's compare-and-swap, and past 32 lost races in a row the worker got
// a 500 and registered again later: 200 workers dialling one gateway took
// 30 s, with 143 of them refused at least once. This process's updates are
// now serialised before the swap, which is left to settle other replicas.
func TestRegistryConcurrentAdmissionsOneProcess(t *testing.T) {
	for _, kind := range []string{"bolt", "wal"} {
		t.Run(kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "l.db")
			var st Store
			var err error
			if kind == "bolt" {
				st, err = OpenBolt(path)
			} else {
				st, err = OpenWAL(path, WALOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			op := operatorKey(t, 1)
			l := New(st, Options{Operator: op})
			const workers = 100
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for i := range workers {
				wg.Go(func() {
					if err := l.AdmitWorker(ctx, workerN(i), task.ModelVersion{Name: "m", Digest: digest("m")}); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			h, err := l.RootHistory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if roots, err := h.Verify(op.Public()); err != nil || roots.Len() != workers {
				t.Fatalf("history: %v, %d entries, want %d", err, len(h.Entries), workers)
			}
		})
	}
}

// stalledMeta is a store whose first admission read blocks until release
// is closed: an update of this process that is slow (a Redis round trip
// stuck in a network partition, a disk stalled).
type stalledMeta struct {
	*WALStore
	entered, release chan struct{}
	once             sync.Once
}

func (s *stalledMeta) Meta(ctx context.Context, k string) ([]byte, error) {
	first := false
	s.once.Do(func() { first = true })
	if first && k == metaAdmission {
		close(s.entered)
		<-s.release
	}
	return s.WALStore.Meta(ctx, k)
}

// A registration whose context ends (its worker hung up, its deadline
// passed) while another update of this process is slow stops waiting,
// instead of holding a goroutine, and later the slot, behind it.
func TestRegistryUpdateWaitHonoursContext(t *testing.T) {
	st, err := OpenWAL(filepath.Join(t.TempDir(), "l.db"), WALOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &stalledMeta{WALStore: st, entered: make(chan struct{}), release: make(chan struct{})}
	l := New(s, Options{Operator: operatorKey(t, 1)})
	mv := task.ModelVersion{Name: "m", Digest: digest("m")}
	slow := make(chan error, 1)
	go func() { slow <- l.AdmitWorker(context.Background(), workerN(1), mv) }()
	<-s.entered
	var released atomic.Bool
	safety := time.AfterFunc(10*time.Second, func() { released.Store(true); close(s.release) })
	defer safety.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = l.AdmitWorker(ctx, workerN(2), mv)
	if released.Load() {
		t.Fatal("the second registration waited for the slow update to end despite its context")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second registration: %v, want its context's deadline", err)
	}
	if safety.Stop() {
		close(s.release)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the slow update: %v", err)
	}
	// The slot was given back: a later update goes through.
	if err := l.AdmitWorker(context.Background(), workerN(3), mv); err != nil {
		t.Fatal(err)
	}
}
