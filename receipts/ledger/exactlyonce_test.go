package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/receipts"
)

// sameRequest is entry i recorded again under another receipt ID: what a
// gateway (or anyone who can reach Record) would do to bill one request twice.
func sameRequest(i int, receiptID string) *Entry {
	e := confEntry(i)
	e.ID = receiptID
	return e
}

// TestStoreOneRecordPerRequest: a request ID is recorded at most once,
// whatever receipt ID it comes with (the old stores took it twice).
func TestStoreOneRecordPerRequest(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		ctx := context.Background()
		mustAppend(t, st, confEntry(0))
		tests := []struct {
			name    string
			entries []*Entry
		}{
			{"recorded before", []*Entry{sameRequest(0, "rcpt_again")}},
			{"one of several", []*Entry{confEntry(5), sameRequest(0, "rcpt_again2")}},
			{"twice in one append", []*Entry{confEntry(6), sameRequest(6, "rcpt_twin")}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				err := st.Append(ctx, tc.entries)
				if !errors.Is(err, ErrDuplicateRequest) || !errors.Is(err, ErrDuplicate) {
					t.Errorf("err = %v, want ErrDuplicateRequest", err)
				}
			})
		}
		// Concurrent appends of one request (one commit group or not):
		// exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for k := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if st.Append(ctx, []*Entry{sameRequest(9, fmt.Sprintf("rcpt_race%d", k))}) == nil {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Errorf("%d of 8 concurrent records of one request were stored, want 1", won)
		}
		st = reopen()
		if err := st.Append(ctx, []*Entry{sameRequest(0, "rcpt_after_restart")}); !errors.Is(err, ErrDuplicateRequest) {
			t.Errorf("after reopen: err = %v, want ErrDuplicateRequest", err)
		}
		all, _, err := st.List(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range all {
			if seen[e.Completion.RequestID] {
				t.Errorf("export lists request %s twice", e.Completion.RequestID)
			}
			seen[e.Completion.RequestID] = true
		}
		if len(all) != 2 {
			t.Errorf("%d entries stored, want 2 (req-0 and one req-9)", len(all))
		}
	})
}

func withWorker(e *Entry, w string) *Entry {
	e.Completion.WorkerID = w
	return e
}

func TestStorePendingByWorker(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		ctx := context.Background()
		var a, b []*Entry
		for i := range 6 {
			if i%3 == 0 {
				b = append(b, withWorker(confEntry(i), "0xb"))
				mustAppend(t, st, b[len(b)-1])
			} else {
				a = append(a, withWorker(confEntry(i), "0xa"))
				mustAppend(t, st, a[len(a)-1])
			}
		}
		ws, err := st.PendingWorkers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ws, []string{"0xa", "0xb"}); diff != "" {
			t.Errorf("pending workers (-got +want):\n%s", diff)
		}
		got, err := st.PendingFor(ctx, "0xa", 3)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(got), ids(a[:3])); diff != "" {
			t.Errorf("PendingFor a, 3 (-got +want):\n%s", diff)
		}
		if err := st.AssignBatch(ctx, &Batch{WorkerID: "0xb", Model: "m", Capacity: 8, Receipts: ids(b)}); err != nil {
			t.Fatal(err)
		}
		st = reopen()
		ws, _ = st.PendingWorkers(ctx)
		if diff := cmp.Diff(ws, []string{"0xa"}); diff != "" {
			t.Errorf("after batching b (-got +want):\n%s", diff)
		}
		if got, _ := st.PendingFor(ctx, "0xb", 10); len(got) != 0 {
			t.Errorf("PendingFor b after its batch: %v", ids(got))
		}
	})
}

func TestStoreRecutAndRevive(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		ctx := context.Background()
		es := confEntries(0, 6)
		mustAppend(t, st, es...)
		b1 := &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[:4])}
		if err := st.AssignBatch(ctx, b1); err != nil {
			t.Fatal(err)
		}

		// Progress is stored on an open batch.
		b1.Attempts, b1.PendingReason, b1.OfferedAt = 3, "worker unreachable", es[0].RecordedAt
		if err := st.UpdateBatch(ctx, b1); err != nil {
			t.Fatal(err)
		}
		if _, got, _ := st.Get(ctx, es[0].ID); got.Attempts != 3 || got.PendingReason != "worker unreachable" || !got.OfferedAt.Equal(b1.OfferedAt) {
			t.Errorf("progress not stored: %+v", got)
		}

		// Re-cut: es[1] refused by the worker (failed), the others back to the pool.
		failed := map[string]string{es[1].ID: "record expired"}
		if err := st.RecutBatch(ctx, b1, "given up after 6h", failed); err != nil {
			t.Fatal(err)
		}
		if err := st.RecutBatch(ctx, b1, "again", nil); !errors.Is(err, ErrNotOpen) {
			t.Errorf("re-cut twice: err = %v, want ErrNotOpen", err)
		}
		st = reopen()
		e, b, err := st.Get(ctx, es[1].ID)
		if err != nil || b != nil || e.Failure != "record expired" {
			t.Errorf("refused receipt: %+v batch %v err %v", e, b, err)
		}
		e, b, err = st.Get(ctx, es[0].ID)
		if err != nil || b != nil || e.BatchSeq != 0 || e.PendingReason != "given up after 6h" {
			t.Errorf("re-cut receipt: %+v batch %v err %v", e, b, err)
		}
		pending, _ := st.Pending(ctx)
		if diff := cmp.Diff(ids(pending), []string{es[0].ID, es[2].ID, es[3].ID, es[4].ID, es[5].ID}); diff != "" {
			t.Errorf("pool after re-cut (-got +want):\n%s", diff)
		}
		pw, _ := st.PendingFor(ctx, "0xabc", 10)
		if diff := cmp.Diff(ids(pw), ids(pending)); diff != "" {
			t.Errorf("worker pool after re-cut (-got +want):\n%s", diff)
		}
		if open, _ := st.OpenBatches(ctx); len(open) != 0 {
			t.Errorf("a re-cut batch is still open: %v", open)
		}
		// A refused receipt is never batched again; a re-cut batch takes no outcome.
		if err := st.AssignBatch(ctx, &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[1:2])}); !errors.Is(err, ErrNotPending) {
			t.Errorf("batching a failed receipt: err = %v, want ErrNotPending", err)
		}
		proven := *b1
		proven.Status = receipts.StatusProven
		if err := st.FinishBatch(ctx, &proven); err != nil {
			t.Fatal(err)
		}
		if _, b, _ := st.Get(ctx, es[0].ID); b != nil {
			t.Errorf("a stale proof of a re-cut batch was stored: %+v", b)
		}
		if c, ok := st.(Counter); ok {
			n, _ := c.Counts(ctx)
			if diff := cmp.Diff(n, Counts{Pending: 5, Failed: 1}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		}

		// Revive: only a re-cut batch, only while all its receipts are pending.
		b2 := &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[2:4])}
		if err := st.AssignBatch(ctx, b2); err != nil {
			t.Fatal(err)
		}
		if err := st.RecutBatch(ctx, b2, "worker gone", nil); err != nil {
			t.Fatal(err)
		}
		b3 := &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[3:5])}
		if err := st.AssignBatch(ctx, b3); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ReviveBatch(ctx, b2.Seq); !errors.Is(err, ErrNotPending) {
			t.Errorf("revive while a receipt is in another batch: err = %v, want ErrNotPending", err)
		}
		if _, err := st.ReviveBatch(ctx, b3.Seq); !errors.Is(err, ErrNotOpen) {
			t.Errorf("revive an open batch: err = %v, want ErrNotOpen", err)
		}
		if err := st.RecutBatch(ctx, b3, "the worker countersigned these in another batch", nil); err != nil {
			t.Fatal(err)
		}
		rb, err := st.ReviveBatch(ctx, b2.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if rb.Seq != b2.Seq || rb.Status != receipts.StatusPending || !cmp.Equal(rb.Receipts, b2.Receipts) {
			t.Errorf("revived %+v, want batch %d as cut", rb, b2.Seq)
		}
		st = reopen()
		open, _ := st.OpenBatches(ctx)
		if len(open) != 1 || open[0].Seq != b2.Seq {
			t.Errorf("open after revive: %+v", open)
		}
		for i, id := range b2.Receipts {
			e, b, _ := st.Get(ctx, id)
			if e.BatchSeq != b2.Seq || e.Index != i || e.PendingReason != "" || b == nil {
				t.Errorf("revived receipt %s: %+v", id, e)
			}
		}
		if _, err := st.ReviveBatch(ctx, b2.Seq); !errors.Is(err, ErrNotOpen) {
			t.Errorf("revive twice: err = %v, want ErrNotOpen", err)
		}
		if _, err := st.ReviveBatch(ctx, 999); !errors.Is(err, ErrNoBatch) {
			t.Errorf("revive an unknown batch: err = %v, want ErrNoBatch", err)
		}
		if got, err := st.GetBatch(ctx, b3.Seq); err != nil || got.Status != StatusRecut || got.Seq != b3.Seq {
			t.Errorf("GetBatch(re-cut) = %+v, %v", got, err)
		}
		if _, err := st.GetBatch(ctx, 999); !errors.Is(err, ErrNoBatch) {
			t.Errorf("GetBatch(unknown): err = %v, want ErrNoBatch", err)
		}
		pending, _ = st.Pending(ctx)
		if diff := cmp.Diff(ids(pending), []string{es[0].ID, es[4].ID, es[5].ID}); diff != "" {
			t.Errorf("pool after revive (-got +want):\n%s", diff)
		}
	})
}

// A ledger written before the request-ID and per-worker indexes existed
// gets them on open: its pending receipts are still cut, and a request it
// holds is still refused a second record.
func TestIndexesBackfilledOnOpen(t *testing.T) {
	es := confEntries(0, 3)
	check := func(t *testing.T, st Store) {
		t.Helper()
		ctx := context.Background()
		got, err := st.PendingFor(ctx, "0xabc", 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(got), ids(es[1:])); diff != "" {
			t.Errorf("backfilled pool (-got +want):\n%s", diff)
		}
		if err := st.Append(ctx, []*Entry{sameRequest(0, "rcpt_dup")}); !errors.Is(err, ErrDuplicateRequest) {
			t.Errorf("err = %v, want ErrDuplicateRequest", err)
		}
	}
	t.Run("bolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		st, err := OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, st, es...)
		if err := st.AssignBatch(context.Background(), &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[:1])}); err != nil {
			t.Fatal(err)
		}
		st.db.Update(func(tx *bolt.Tx) error {
			return errors.Join(tx.DeleteBucket(bucketRequests), tx.DeleteBucket(bucketPendingW))
		})
		st.Close()
		st, err = OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		check(t, st)
	})
	t.Run("redis", func(t *testing.T) {
		r := redistest.New(t)
		ctx := context.Background()
		st := openTestRedis(t, r.URL, r.Prefix)
		mustAppend(t, st, es...)
		if err := st.AssignBatch(ctx, &Batch{WorkerID: "0xabc", Model: "m", Capacity: 8, Receipts: ids(es[:1])}); err != nil {
			t.Fatal(err)
		}
		st.Close()
		var old []string
		for _, k := range []string{"indexed", "pworkers", "pw:0xabc"} {
			old = append(old, r.Prefix+k)
		}
		for _, e := range es {
			old = append(old, r.Prefix+"rq:"+e.Completion.RequestID)
			r.Client.HDel(ctx, r.Prefix+"e:"+e.ID, "w")
		}
		r.Client.Del(ctx, old...)
		check(t, openTestRedis(t, r.URL, r.Prefix))
	})
}
