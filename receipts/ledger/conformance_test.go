package ledger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// storeKind opens a Store for a test; reopen closes the current one and
// opens the same data again (bbolt: the same file; Redis: the same prefix
// over a new connection).
type storeKind struct {
	name string
	open func(t testing.TB) (st Store, reopen func() Store)
}

func storeKinds() []storeKind {
	return []storeKind{
		{"bolt", func(t testing.TB) (Store, func() Store) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			open := func() Store {
				st, err := OpenBolt(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			st := open()
			return st, func() Store { st.Close(); st = open(); return st }
		}},
		{"bolt+wal", func(t testing.TB) (Store, func() Store) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			open := func() Store {
				st, err := OpenWAL(path, WALOptions{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			st := open()
			return st, func() Store { st.Close(); st = open(); return st }
		}},
		{"redis", func(t testing.TB) (Store, func() Store) {
			r := redistest.New(t)
			open := func() Store {
				st, err := OpenRedis(context.Background(), r.URL, RedisOptions{Prefix: r.Prefix})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			st := open()
			return st, func() Store { st.Close(); st = open(); return st }
		}},
		// What a gateway in the Redis mode writes through: Redis with a
		// local spool in front for outages.
		{"redis+spool", func(t testing.TB) (Store, func() Store) {
			r := redistest.New(t)
			path := filepath.Join(t.TempDir(), "spool.db")
			open := func() Store {
				rs, err := OpenRedis(context.Background(), r.URL, RedisOptions{Prefix: r.Prefix})
				if err != nil {
					t.Fatal(err)
				}
				st, err := OpenSpool(rs, path, SpoolOptions{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			st := open()
			return st, func() Store { st.Close(); st = open(); return st }
		}},
	}
}

// forEachStore runs test against every Store implementation.
func forEachStore(t *testing.T, test func(t *testing.T, st Store, reopen func() Store)) {
	for _, k := range storeKinds() {
		t.Run(k.name, func(t *testing.T) {
			st, reopen := k.open(t)
			test(t, st, reopen)
		})
	}
}

func confEntry(i int) *Entry {
	d := func(s string) string { return fmt.Sprintf("%064x", len(s)*7919+i) }
	return &Entry{
		ID: fmt.Sprintf("rcpt_conf%04d", i),
		Completion: &task.Completion{RequestID: fmt.Sprintf("req-%d", i), WorkerID: "0xabc", Model: "m",
			ModelDigest: d("w"), RequestDigest: d("rq"), ResponseDigest: d("rs"), Subject: "key_1",
			PromptTokens: i, CompletionTokens: 2 * i, Time: time.Unix(1800000000, int64(i)).UTC()},
		RecordedAt:  time.Unix(1800000100, int64(i)).UTC(),
		Traceparent: fmt.Sprintf("00-%032x-%016x-01", i+1, i+1),
	}
}

func confEntries(from, to int) []*Entry {
	var out []*Entry
	for i := from; i < to; i++ {
		out = append(out, confEntry(i))
	}
	return out
}

func ids(es []*Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func seqs(es []*Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func mustAppend(t *testing.T, st Store, es ...*Entry) {
	t.Helper()
	if err := st.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

func TestStoreAppendOrderAndList(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		ctx := context.Background()
		mustAppend(t, st, confEntry(0))
		mustAppend(t, st, confEntries(1, 4)...)
		mustAppend(t, st) // an empty append is a no-op
		all := confEntries(0, 4)

		tests := []struct {
			name  string
			after uint64
			limit int
			want  []string
		}{
			{"all", 0, 10, ids(all)},
			{"first page", 0, 2, ids(all[:2])},
			{"second page", 2, 2, ids(all[2:4])},
			{"past the end", 4, 10, nil},
			{"zero limit", 0, 0, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, batches, err := st.List(ctx, tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(ids(got), tc.want, emptyIsNil); diff != "" {
					t.Errorf("ids (-got +want):\n%s", diff)
				}
				for i, e := range got {
					if e.Seq != tc.after+uint64(i)+1 {
						t.Errorf("entry %s: seq %d, want %d", e.ID, e.Seq, tc.after+uint64(i)+1)
					}
				}
				if len(batches) != 0 {
					t.Errorf("batches %v for pending entries", batches)
				}
			})
		}

		// Get round-trips the whole entry.
		e, b, err := st.Get(ctx, all[2].ID)
		if err != nil {
			t.Fatal(err)
		}
		want := confEntry(2)
		want.Seq, want.SubjectSeq = 3, 3
		if diff := cmp.Diff(e, want); diff != "" || b != nil {
			t.Errorf("Get (-got +want):\n%s batch %v", diff, b)
		}
		got, err := st.Entries(ctx, []string{all[3].ID, all[0].ID})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(seqs(got), []uint64{4, 1}); diff != "" {
			t.Errorf("Entries seqs (-got +want):\n%s", diff)
		}
		if _, err := st.Entries(ctx, []string{"rcpt_nope"}); err == nil {
			t.Error("Entries of an unknown receipt: no error")
		}
	})
}

var emptyIsNil = cmp.Transformer("emptyIsNil", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

func TestStoreGetUnknownIs404(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		_, _, err := st.Get(context.Background(), "rcpt_unknown")
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			t.Errorf("err = %v, want apierr 404", err)
		}
	})
}

func TestStoreDuplicateID(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		mustAppend(t, st, confEntry(0))
		tests := []struct {
			name    string
			entries []*Entry
		}{
			{"already stored", []*Entry{confEntry(0)}},
			{"one of several", []*Entry{confEntry(6), confEntry(0)}},
			{"twice in one append", []*Entry{confEntry(8), confEntry(8)}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if err := st.Append(context.Background(), tc.entries); !errors.Is(err, ErrDuplicate) {
					t.Errorf("err = %v, want ErrDuplicate", err)
				}
			})
		}
		// A refused append stores nothing; the next one takes the next seq.
		e := confEntry(7)
		mustAppend(t, st, e)
		all, _, err := st.List(context.Background(), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(all), []string{confEntry(0).ID, e.ID}); diff != "" || e.Seq != 2 {
			t.Errorf("after refused appends (-got +want):\n%s seq %d", diff, e.Seq)
		}
	})
}

func TestStoreBatches(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		ctx := context.Background()
		es := confEntries(0, 5)
		mustAppend(t, st, es...)

		created := time.Unix(1800000200, 0).UTC()
		b1 := &Batch{WorkerID: "0xabc", Model: "m", ModelDigest: "d", Capacity: 8,
			Receipts: []string{es[1].ID, es[3].ID}, CreatedAt: created}
		if err := st.AssignBatch(ctx, b1); err != nil {
			t.Fatal(err)
		}
		if b1.Seq != 1 || b1.Status != receipts.StatusPending {
			t.Errorf("assigned batch seq %d status %q", b1.Seq, b1.Status)
		}

		// A batch naming a receipt that is no longer pending (or unknown)
		// fails and changes nothing.
		for _, tc := range []struct {
			name string
			ids  []string
		}{
			{"already batched", []string{es[0].ID, es[3].ID}},
			{"unknown", []string{es[0].ID, "rcpt_nope"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := st.AssignBatch(ctx, &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: tc.ids}); err == nil {
					t.Error("conflicting batch assigned")
				}
			})
		}
		pending, err := st.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(pending), []string{es[0].ID, es[2].ID, es[4].ID}); diff != "" {
			t.Errorf("pending (-got +want):\n%s", diff)
		}

		b2 := &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: []string{es[0].ID}, CreatedAt: created}
		if err := st.AssignBatch(ctx, b2); err != nil {
			t.Fatal(err)
		}
		if b2.Seq != 2 {
			t.Errorf("second batch seq %d, want 2 (a refused batch must not use a seq)", b2.Seq)
		}

		e, b, err := st.Get(ctx, es[3].ID)
		if err != nil {
			t.Fatal(err)
		}
		if e.BatchSeq != 1 || e.Index != 1 {
			t.Errorf("entry batch %d index %d, want 1, 1", e.BatchSeq, e.Index)
		}
		if diff := cmp.Diff(b, b1); diff != "" {
			t.Errorf("batch (-got +want):\n%s", diff)
		}
		listed, batches, err := st.List(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(listed) != 5 || len(batches) != 2 || batches[1] == nil || batches[2] == nil {
			t.Errorf("List: %d entries, batches %v", len(listed), batches)
		}

		open, err := st.OpenBatches(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(open, []*Batch{b1, b2}); diff != "" {
			t.Errorf("open batches (-got +want):\n%s", diff)
		}

		done := *b1
		done.Status, done.Proof, done.Leaves, done.ProvenAt = receipts.StatusProven, "proof1", []string{"l1", "l2"}, created.Add(time.Second)
		if err := st.FinishBatch(ctx, &done); err != nil {
			t.Fatal(err)
		}
		again := done
		again.Status, again.Proof = receipts.StatusFailed, "other"
		if err := st.FinishBatch(ctx, &again); err != nil {
			t.Errorf("finishing twice: %v", err)
		}
		_, b, err = st.Get(ctx, es[1].ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(b, &done); diff != "" {
			t.Errorf("finished batch (-got +want):\n%s", diff)
		}
		open, err = st.OpenBatches(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(open, []*Batch{b2}); diff != "" {
			t.Errorf("open after finish (-got +want):\n%s", diff)
		}
	})
}

func TestStoreCounts(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		c, ok := st.(Counter)
		if !ok {
			t.Skip("store does not implement Counter")
		}
		ctx := context.Background()
		es := confEntries(0, 6)
		mustAppend(t, st, es...)
		proven := &Batch{Model: "m", Capacity: 8, Receipts: ids(es[:3])}
		failed := &Batch{Model: "m", Capacity: 8, Receipts: ids(es[3:4])}
		for _, b := range []*Batch{proven, failed} {
			if err := st.AssignBatch(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		proven.Status, failed.Status = receipts.StatusProven, receipts.StatusFailed
		for _, b := range []*Batch{proven, failed, proven} { // the repeat is a no-op
			if err := st.FinishBatch(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		got, err := c.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, Counts{Pending: 2, Proven: 3, Failed: 1}); diff != "" {
			t.Errorf("counts (-got +want):\n%s", diff)
		}
	})
}

func TestStoreMeta(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		ctx := context.Background()
		if v, err := st.Meta(ctx, "registry"); err != nil || v != nil {
			t.Errorf("unknown meta = %q, %v; want nil, nil", v, err)
		}
		for _, v := range []string{"one", "two"} {
			if err := st.PutMeta(ctx, "registry", []byte(v)); err != nil {
				t.Fatal(err)
			}
			if got, err := st.Meta(ctx, "registry"); err != nil || string(got) != v {
				t.Errorf("meta = %q, %v; want %q", got, err, v)
			}
		}
	})
}

func TestStoreSwapMeta(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		sw, ok := st.(MetaSwapper)
		if !ok {
			t.Fatalf("%T does not implement MetaSwapper", st)
		}
		ctx := context.Background()
		steps := []struct {
			name     string
			old, new string
			absent   bool // old is nil: the key must be absent
			want     bool
			stored   string
		}{
			{"absent key, expected absent", "", "one", true, true, "one"},
			{"present key, expected absent", "", "two", true, false, "one"},
			{"stale old value", "zero", "two", false, false, "one"},
			{"current old value", "one", "two", false, true, "two"},
		}
		for _, s := range steps {
			var old []byte
			if !s.absent {
				old = []byte(s.old)
			}
			got, err := sw.SwapMeta(ctx, "swap", old, []byte(s.new))
			if err != nil || got != s.want {
				t.Errorf("%s: SwapMeta = %v, %v; want %v", s.name, got, err, s.want)
			}
			if v, _ := st.Meta(ctx, "swap"); string(v) != s.stored {
				t.Errorf("%s: stored %q, want %q", s.name, v, s.stored)
			}
		}
	})
}

func TestStoreSurvivesReopen(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		ctx := context.Background()
		es := confEntries(0, 3)
		mustAppend(t, st, es...)
		b := &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: []string{es[0].ID}, CreatedAt: time.Unix(1800000200, 0).UTC()}
		if err := st.AssignBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := st.PutMeta(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}

		st = reopen()
		all, _, err := st.List(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(seqs(all), []uint64{1, 2, 3}); diff != "" {
			t.Errorf("seqs after reopen (-got +want):\n%s", diff)
		}
		pending, err := st.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		open, err := st.OpenBatches(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := st.Meta(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 2 || len(open) != 1 || string(v) != "v" {
			t.Errorf("after reopen: %d pending, %d open batches, meta %q", len(pending), len(open), v)
		}
		// Sequences continue where they were.
		e := confEntry(9)
		mustAppend(t, st, e)
		if e.Seq != 4 {
			t.Errorf("seq after reopen %d, want 4", e.Seq)
		}
	})
}

func TestStoreConcurrentAppends(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		const writers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					n := w*each + i
					if err := st.Append(context.Background(), []*Entry{confEntry(n)}); err != nil {
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
		all, _, err := st.List(context.Background(), 0, writers*each+1)
		if err != nil {
			t.Fatal(err)
		}
		got := seqs(all)
		if !sort.SliceIsSorted(got, func(i, j int) bool { return got[i] < got[j] }) || len(got) != writers*each ||
			got[0] != 1 || got[len(got)-1] != writers*each {
			t.Errorf("seqs not 1..%d in order: %v", writers*each, got)
		}
	})
}

func TestStoreAppendAfterClose(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := st.Append(context.Background(), []*Entry{confEntry(0)}); err == nil {
			t.Error("append after Close succeeded")
		}
	})
}

// BenchmarkAppend compares one-receipt appends on each Store, one writer at
// a time and with 64 concurrent writers (group commit). "redis" is whatever
// persistence the shared server has; "redis-fsync" is a throwaway server
// with appendonly yes + appendfsync always, the setting that matches
// bbolt's guarantee. Besides ns/op it reports records/s (wall clock) and
// the acknowledge latency's p50 and p99 (µs), from every append's own
// time.
func BenchmarkAppend(b *testing.B) {
	kinds := append(storeKinds(), storeKind{"redis-fsync", func(t testing.TB) (Store, func() Store) {
		srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
		st, err := OpenRedis(context.Background(), srv.URL, RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, nil
	}})
	for _, k := range kinds {
		for _, par := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", k.name, par), func(b *testing.B) {
				st, _ := k.open(b)
				var mu sync.Mutex
				n := 0
				next := func() int { mu.Lock(); defer mu.Unlock(); n++; return n }
				var lat latencies
				appendOne := func() error {
					start := time.Now()
					err := st.Append(context.Background(), []*Entry{confEntry(next())})
					lat.add(time.Since(start))
					return err
				}
				b.ReportAllocs()
				start := time.Now()
				defer func() {
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
					b.ReportMetric(lat.quantile(0.50), "p50-µs")
					b.ReportMetric(lat.quantile(0.99), "p99-µs")
				}()
				if par == 1 {
					for b.Loop() {
						if err := appendOne(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism((par + 1) / 2) // RunParallel starts parallelism × GOMAXPROCS goroutines
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := appendOne(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// latencies collects durations for quantiles (a benchmark's every
// append: a few MB at most).
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// quantile returns the q-quantile in microseconds (0 without samples).
func (l *latencies) quantile(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return float64(s[min(len(s)-1, int(q*float64(len(s))))].Nanoseconds()) / 1e3
}
