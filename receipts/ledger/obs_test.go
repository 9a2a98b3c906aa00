package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts"
)

// TestRecordKeepsTraceparentAndTimesTheWrite checks that a receipt keeps
// the traceparent of the request that recorded it (for the prover's
// links) and that each write's latency is recorded.
func TestRecordKeepsTraceparentAndTimesTheWrite(t *testing.T) {
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // nothing to flush
	st, err := OpenBolt(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := New(st, Options{Clock: clock.NewFake(time.Unix(1800000000, 0)), Metrics: p.Metrics()})

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"request in a trace", obs.ContextWithTraceparent(context.Background(), tp), tp},
		{"no trace", context.Background(), ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("rcpt_%d", i)
			if err := l.Record(tc.ctx, id, completion(i+1)); err != nil {
				t.Fatal(err)
			}
			e, _, err := st.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if e.Traceparent != tc.want {
				t.Errorf("stored traceparent %q, want %q", e.Traceparent, tc.want)
			}
		})
	}
	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	if want := `tollgate_ledger_write_duration_seconds_count{outcome="ok"} 2` + "\n"; !strings.Contains(buf.String(), want) {
		t.Errorf("metrics lack %q:\n%s", want, buf.String())
	}
}

// TestBoltCounts checks the receipt counters kept by FinishBatch, and that
// a ledger written before the counters existed gets them at open.
func TestBoltCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l := openLedger(t, path)
	ctx := context.Background()
	for i := range 6 {
		if err := l.Record(ctx, fmt.Sprintf("rcpt_%d", i), completion(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Store()
	steps := []struct {
		name     string
		receipts []string
		status   string // "" leaves the batch open
		want     Counts
	}{
		{"recorded", nil, "", Counts{Pending: 6}},
		{"open batch is still pending", []string{"rcpt_0", "rcpt_1"}, "", Counts{Pending: 6}},
		{"proven", []string{"rcpt_2", "rcpt_3", "rcpt_4"}, receipts.StatusProven, Counts{Pending: 3, Proven: 3}},
		{"failed", []string{"rcpt_5"}, receipts.StatusFailed, Counts{Pending: 2, Proven: 3, Failed: 1}},
	}
	for _, s := range steps {
		if s.receipts != nil {
			b := &Batch{WorkerID: testWorker, Model: "m", ModelDigest: digest("w"), Capacity: 4, Receipts: s.receipts, Status: receipts.StatusPending}
			if err := st.AssignBatch(ctx, b); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if s.status != "" {
				b.Status = s.status
				for range 2 { // finishing twice is a no-op and counts once
					if err := st.FinishBatch(ctx, b); err != nil {
						t.Fatalf("%s: %v", s.name, err)
					}
				}
			}
		}
		if got, err := l.Counts(ctx); err != nil || got != s.want {
			t.Errorf("%s: Counts = %+v, %v; want %+v", s.name, got, err, s.want)
		}
	}

	// A ledger from before the counters: drop them, reopen, same counts.
	bs := st.(*BoltStore)
	if err := bs.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		return errors.Join(mb.Delete(metaProven), mb.Delete(metaFailed))
	}); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openLedger(t, path)
	if got, err := reopened.Counts(ctx); err != nil || got != steps[len(steps)-1].want {
		t.Errorf("after reopen: Counts = %+v, %v; want %+v", got, err, steps[len(steps)-1].want)
	}
}
