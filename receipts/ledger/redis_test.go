package ledger

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/receipts"
)

func openTestRedis(t *testing.T, url, prefix string) *RedisStore {
	t.Helper()
	st, err := OpenRedis(context.Background(), url, RedisOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestOpenRedisBadURL(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"not a url", "::nope"},
		{"wrong scheme", "http://127.0.0.1:6379"},
		{"nothing listening", "redis://127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, err := OpenRedis(context.Background(), tc.url, RedisOptions{}); err == nil {
				st.Close()
				t.Error("opened")
			}
		})
	}
}

// With appendonly yes + appendfsync always, a Redis crash (SIGKILL) loses
// no acknowledged receipt, even with concurrent group-committed appends.
func TestRedisRestartLosesNoAcknowledgedReceipt(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	st := openTestRedis(t, srv.URL, DefaultRedisPrefix)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked []string
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := confEntry(w*each + i)
				if err := st.Append(context.Background(), []*Entry{e}); err == nil {
					mu.Lock()
					acked = append(acked, e.ID)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	srv.Restart(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st2 := openTestRedis(t, srv.URL, DefaultRedisPrefix)
	got, err := st2.Entries(ctx, acked)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if len(got) != writers*each {
		t.Errorf("%d receipts after restart, want %d", len(got), writers*each)
	}
}

func assignN(t *testing.T, st Store, n int, from int) []*Batch {
	t.Helper()
	var out []*Batch
	for i := range n {
		es := confEntries(from+2*i, from+2*i+2)
		mustAppend(t, st, es...)
		b := &Batch{WorkerID: es[0].Completion.WorkerID, Model: "m", ModelDigest: es[0].Completion.ModelDigest, Capacity: 8, Receipts: ids(es)}
		if err := st.AssignBatch(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestRedisQueue walks the proving queue through what several provers do:
// each new job goes to one consumer, a dead consumer's job is claimed by
// another, a job whose batch was finished but not acknowledged comes back
// finished, and a second outcome for a batch changes nothing.
func TestRedisQueue(t *testing.T) {
	r := redistest.New(t)
	st := openTestRedis(t, r.URL, r.Prefix)
	ctx := context.Background()
	bs := assignN(t, st, 2, 0)
	claim := func(who string, minIdle time.Duration) *Job {
		t.Helper()
		j, err := st.Claim(ctx, who, minIdle, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		return j
	}
	const long = time.Hour
	a, b := claim("a", long), claim("b", long)
	if a == nil || b == nil || a.Batch.Seq != bs[0].Seq || b.Batch.Seq != bs[1].Seq {
		t.Fatalf("new jobs: a %+v b %+v", a, b)
	}
	if j := claim("c", long); j != nil {
		t.Fatalf("c got %+v with every job held", j)
	}
	if err := st.Touch(ctx, "a", a); err != nil {
		t.Fatal(err)
	}
	// "a" dies holding batch 1: with min-idle 0 it counts as stale at once.
	c := claim("c", 0)
	if c == nil || c.Batch.Seq != bs[0].Seq || c.Deliveries != 2 || c.Finished() {
		t.Fatalf("takeover: %+v", c)
	}
	proven := *c.Batch
	proven.Status = receipts.StatusProven
	if err := st.FinishBatch(ctx, &proven); err != nil {
		t.Fatal(err)
	}
	if err := st.Ack(ctx, c); err != nil {
		t.Fatal(err)
	}
	// "a" wakes up and finishes the same batch as failed: a no-op.
	failed := *a.Batch
	failed.Status, failed.Error = receipts.StatusFailed, "late"
	if err := st.FinishBatch(ctx, &failed); err != nil {
		t.Fatal(err)
	}
	// "b" finishes batch 2 and dies before its Ack.
	proven2 := *b.Batch
	proven2.Status = receipts.StatusProven
	if err := st.FinishBatch(ctx, &proven2); err != nil {
		t.Fatal(err)
	}
	d := claim("d", 0)
	if d == nil || d.Batch.Seq != bs[1].Seq || !d.Finished() {
		t.Fatalf("finished but unacknowledged job: %+v", d)
	}
	if err := st.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	if j := claim("d", 0); j != nil {
		t.Fatalf("queue not empty: %+v", j)
	}
	n, err := st.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(n, Counts{Proven: 4}); diff != "" {
		t.Errorf("counts (-got +want):\n%s", diff)
	}
	if _, _, got := st.Get(ctx, bs[0].Receipts[0]); got != nil {
		t.Fatal(got)
	}
	if _, b1, _ := st.Get(ctx, bs[0].Receipts[0]); b1.Status != receipts.StatusProven {
		t.Errorf("batch 1 is %s, want the first outcome (proven)", b1.Status)
	}
}

// TestSpoolKeepsReceiptsThroughAnOutage: receipts recorded while Redis is
// down are acknowledged from the local spool, served as pending, and end
// up in Redis once it is back.
func TestSpoolKeepsReceiptsThroughAnOutage(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	rs := openTestRedis(t, srv.URL, DefaultRedisPrefix)
	st, err := OpenSpool(rs, filepath.Join(t.TempDir(), "spool.db"), SpoolOptions{RetryInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	mustAppend(t, st, confEntry(0))
	srv.Stop()
	mustAppend(t, st, confEntry(1), confEntry(2))
	mustAppend(t, st, confEntry(3))
	if st.Err() == nil {
		t.Error("Err is nil while Redis is down")
	}
	if n, _ := st.Spooled(); n != 3 {
		t.Errorf("%d spooled, want 3", n)
	}
	if e, _, err := st.Get(ctx, confEntry(2).ID); err != nil || e.ID != confEntry(2).ID {
		t.Errorf("spooled receipt: %v, %v", e, err)
	}
	srv.Restart(t)
	// Waiting for the flusher, an outside process's recovery: give up
	// after 10 s.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, _ := st.Spooled(); n == 0 && st.Err() == nil {
			break
		}
		if time.Now().After(deadline) {
			n, _ := st.Spooled()
			t.Fatalf("still %d spooled, err %v", n, st.Err())
		}
	}
	got, err := rs.Entries(ctx, ids(confEntries(0, 4)))
	if err != nil || len(got) != 4 {
		t.Fatalf("in Redis after the flush: %d, %v", len(got), err)
	}
	n, err := st.Counts(ctx)
	if err != nil || n.Pending != 4 {
		t.Errorf("counts %+v, %v", n, err)
	}
}
