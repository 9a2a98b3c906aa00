package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

const testWorker = "0x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func completion(i int) *task.Completion {
	id := fmt.Sprintf("req-%d", i)
	return &task.Completion{RequestID: id, WorkerID: testWorker, Model: "m", ModelDigest: digest("w"),
		RequestDigest: digest("rq" + id), ResponseDigest: digest("rs" + id), Subject: "key_1",
		PromptTokens: i, CompletionTokens: 2 * i, Time: time.Unix(1800000000, int64(i)).UTC()}
}

func openLedger(t testing.TB, path string) *Ledger {
	t.Helper()
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(st, Options{Clock: clock.NewFake(time.Unix(1800000000, 0))})
}

func TestRecordAndExport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l := openLedger(t, path)
	ctx := context.Background()
	for i := range 5 {
		if err := l.Record(ctx, fmt.Sprintf("rcpt_%d", i), completion(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Record(ctx, "rcpt_0", completion(9)); err == nil {
		t.Error("duplicate receipt ID recorded")
	}
	// Durable across a reopen.
	l.store.Close()
	l = openLedger(t, path)

	raw, err := l.Receipt(ctx, "rcpt_3")
	if err != nil {
		t.Fatal(err)
	}
	var r receipts.Receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.Version != 1 || r.Status != receipts.StatusPending || r.RequestID != "req-3" || r.CompletionTokens != 6 || r.Leaf == "" {
		t.Errorf("receipt %+v", r)
	}
	var ae *apierr.Error
	if _, err := l.Receipt(ctx, "rcpt_nope"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Errorf("unknown receipt: err = %v, want 404", err)
	}

	var got []string
	after := ""
	for page := 0; page < 5; page++ {
		items, next, err := l.Export(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			var r receipts.Receipt
			json.Unmarshal(it, &r)
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	want := []string{"rcpt_0", "rcpt_1", "rcpt_2", "rcpt_3", "rcpt_4"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("export order (-got +want):\n%s", diff)
	}
	if _, _, err := l.Export(ctx, "not-a-cursor", 2); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("bad cursor: err = %v, want 400", err)
	}
}

func TestRecordRejectsBadCompletions(t *testing.T) {
	l := openLedger(t, filepath.Join(t.TempDir(), "l.db"))
	tests := []struct {
		name   string
		mutate func(c *task.Completion)
	}{
		{"bad request digest", func(c *task.Completion) { c.RequestDigest = "xyz" }},
		{"bad response digest", func(c *task.Completion) { c.ResponseDigest = digest("a")[:63] }},
		{"bad model digest", func(c *task.Completion) { c.ModelDigest = "" }},
		{"negative tokens", func(c *task.Completion) { c.PromptTokens = -1 }},
		{"tokens above 32 bits", func(c *task.Completion) { c.CompletionTokens = 1 << 32 }},
		{"non-canonical worker", func(c *task.Completion) {
			c.WorkerID = "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
		}},
		{"no request id", func(c *task.Completion) { c.RequestID = "" }},
		{"time before 1970", func(c *task.Completion) { c.Time = time.Unix(-5, 0) }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := completion(i)
			tt.mutate(c)
			if err := l.Record(context.Background(), fmt.Sprintf("rcpt_bad_%d", i), c); err == nil {
				t.Error("recorded")
			}
		})
	}
}

// BenchmarkRecordParallel measures fsync'd, group-committed appends under
// concurrency (run with -cpu and -benchtime; compare with
// BenchmarkRecordSerial for the group-commit gain).
func BenchmarkRecordParallel(b *testing.B) {
	l := openLedger(b, filepath.Join(b.TempDir(), "l.db"))
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := l.Record(context.Background(), fmt.Sprintf("rcpt_%d", i), completion(int(i))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRecordSerial(b *testing.B) {
	l := openLedger(b, filepath.Join(b.TempDir(), "l.db"))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := l.Record(context.Background(), fmt.Sprintf("rcpt_%d", i), completion(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestConcurrentRecordsAreAllDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l := openLedger(t, path)
	ctx := context.Background()
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- l.Record(ctx, fmt.Sprintf("rcpt_%d", i), completion(i)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	l.store.Close()
	if err := l.Record(ctx, "rcpt_late", completion(1)); err == nil {
		t.Error("record after close succeeded")
	}
	l = openLedger(t, path)
	items, next, err := l.Export(ctx, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != n || next != "" {
		t.Fatalf("%d receipts after reopen (next %q), want %d", len(items), next, n)
	}
	seen := map[string]bool{}
	for i, it := range items {
		var r receipts.Receipt
		json.Unmarshal(it, &r)
		if r.Cursor != fmt.Sprint(i+1) || seen[r.ID] {
			t.Fatalf("item %d: cursor %s id %s", i, r.Cursor, r.ID)
		}
		seen[r.ID] = true
	}
}
