package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
)

// The backlog's age is the oldest receipt neither proven nor failed, in
// every store, whether it is still pending or in an open batch; finishing
// the batch moves it on.
func TestOldestPending(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		ctx := context.Background()
		l := New(st, Options{})
		if _, ok, err := l.OldestPending(ctx); err != nil || ok {
			t.Fatalf("empty ledger: ok %v err %v", ok, err)
		}
		if err := st.Append(ctx, confEntries(0, 4)); err != nil {
			t.Fatal(err)
		}
		want := func(i int) {
			t.Helper()
			got, ok, err := l.OldestPending(ctx)
			if err != nil || !ok || !got.Equal(confEntry(i).RecordedAt) {
				t.Fatalf("oldest %v ok %v err %v, want entry %d's %v", got, ok, err, i, confEntry(i).RecordedAt)
			}
		}
		want(0)
		b := &Batch{WorkerID: "0xabc", Model: "m", ModelDigest: confEntry(0).Completion.ModelDigest, Capacity: 2,
			Receipts: []string{confEntry(0).ID, confEntry(1).ID}, Status: receipts.StatusPending, CreatedAt: time.Unix(1800000200, 0)}
		if err := st.AssignBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		want(0) // in an open batch, still not proven
		b.Status, b.Error = receipts.StatusFailed, "test"
		if err := st.FinishBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		want(2)
	})
}
