package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// fakeLocal records what a replica's scheduler was told, as one line per
// call.
type fakeLocal struct {
	mu      sync.Mutex
	workers map[string]*task.Registered
	calls   []string
}

func newFakeLocal() *fakeLocal { return &fakeLocal{workers: map[string]*task.Registered{}} }

func (f *fakeLocal) Upsert(w *task.Registered) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.workers[w.WorkerID] = w
	f.calls = append(f.calls, "upsert "+w.WorkerID+" "+w.SessionToken)
}

func (f *fakeLocal) Heartbeat(hb *task.Heartbeat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.workers[hb.WorkerID] == nil {
		return errors.New("unknown worker")
	}
	f.calls = append(f.calls, fmt.Sprintf("hb %s %d", hb.WorkerID, hb.Load.Waiting))
	return nil
}

func (f *fakeLocal) Remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.workers, id)
	f.calls = append(f.calls, "remove "+id)
}

func (f *fakeLocal) Dispute(id, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "dispute "+id+" "+reason)
}

// take returns and clears the calls so far.
func (f *fakeLocal) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func reg(id, token string) *task.Registered {
	return &task.Registered{WorkerID: id, URL: "http://127.0.0.1:9/" + id, SessionToken: token, MaxConcurrency: 4,
		Models: []task.ModelVersion{{Name: "m", Digest: strings.Repeat("ab", 32)}}}
}

func hb(id string, waiting int) *task.Heartbeat {
	return &task.Heartbeat{WorkerID: id, Load: task.Load{Waiting: waiting}}
}

type replica struct {
	reg   *Registry
	local *fakeLocal
}

func newReplicas(t *testing.T, c redis.UniversalClient, prefix string, clk clock.Clock, n int) []replica {
	t.Helper()
	out := make([]replica, n)
	for i := range out {
		out[i].local = newFakeLocal()
		r, err := New(c, out[i].local, Options{Prefix: prefix, Clock: clk, Replica: fmt.Sprint("r", i)})
		if err != nil {
			t.Fatal(err)
		}
		out[i].reg = r
	}
	return out
}

// TestSharedRegistry walks one worker's life across two replicas: it
// registers and heartbeats on A, B sees both; it falls silent, B stops
// refreshing it; it registers again on B with a new session, A re-dials;
// it deregisters, both drop it.
func TestSharedRegistry(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, rd.Client, rd.Prefix, clk, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	steps := []struct {
		name  string
		do    func()
		wantA []string
		wantB []string
	}{
		{"register on A", func() { a.reg.Upsert(reg("w1", "s1")); b.reg.Sync(ctx) },
			[]string{"upsert w1 s1"}, []string{"upsert w1 s1"}},
		{"heartbeat on A reaches B", func() {
			clk.Advance(time.Second)
			if err := a.reg.Heartbeat(hb("w1", 3)); err != nil {
				t.Fatal(err)
			}
			b.reg.Sync(ctx)
			a.reg.Sync(ctx)
		}, []string{"hb w1 3"}, []string{"hb w1 3"}},
		{"the same beat is applied once", func() { b.reg.Sync(ctx) }, nil, nil},
		{"unknown worker's heartbeat is refused", func() {
			if err := b.reg.Heartbeat(hb("w9", 0)); err == nil {
				t.Error("heartbeat of an unknown worker accepted")
			}
		}, nil, nil},
		{"silent worker is not refreshed", func() { clk.Advance(4 * time.Second); b.reg.Sync(ctx) }, nil, nil},
		{"registers again on B with a new session", func() {
			b.reg.Upsert(reg("w1", "s2"))
			a.reg.Sync(ctx)
		}, []string{"upsert w1 s2"}, []string{"upsert w1 s2"}},
		{"deregisters on B", func() { b.reg.Remove("w1"); clk.Advance(4 * time.Second); a.reg.Sync(ctx) },
			[]string{"remove w1"}, []string{"remove w1"}},
	}
	for _, s := range steps {
		s.do()
		if diff := cmp.Diff(a.local.take(), s.wantA); diff != "" {
			t.Errorf("%s: replica A (-got +want):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(b.local.take(), s.wantB); diff != "" {
			t.Errorf("%s: replica B (-got +want):\n%s", s.name, diff)
		}
	}
	if a.reg.Err() != nil || b.reg.Err() != nil {
		t.Errorf("Err while Redis is up: %v, %v", a.reg.Err(), b.reg.Err())
	}
}

func TestVerifySession(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, rd.Client, rd.Prefix, clk, 2)
	rs[0].reg.Upsert(reg("w1", "secret-1"))
	rs[1].reg.Sync(context.Background())
	for _, tc := range []struct {
		worker, token string
		want          bool
	}{{"w1", "secret-1", true}, {"w1", "secret-2", false}, {"w1", "", false}, {"w2", "secret-1", false}} {
		if got := rs[1].reg.VerifySession(tc.worker, tc.token); got != tc.want {
			t.Errorf("VerifySession(%s, %q) = %v, want %v", tc.worker, tc.token, got, tc.want)
		}
	}
}

// TestInvalidRecordsSkipped: what Redis returns is validated like any
// input.
func TestInvalidRecordsSkipped(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, rd.Client, rd.Prefix, clk, 1)
	ctx := context.Background()
	now := clk.Now().UnixMilli()
	good := `{"worker_id":"%s","url":"http://127.0.0.1:9","session_token":"t","models":[{"name":"m","digest":"` + strings.Repeat("ab", 32) + `"}]}`
	for _, tc := range []struct{ id, reg, hb, at string }{
		{"bad-json", `{`, "", fmt.Sprint(now)},
		{"other-id", fmt.Sprintf(good, "someone-else"), "", fmt.Sprint(now)},
		{"bad-url", strings.Replace(fmt.Sprintf(good, "bad-url"), "http://127.0.0.1:9", "file:///etc", 1), "", fmt.Sprint(now)},
		{"bad-hb", fmt.Sprintf(good, "bad-hb"), `{"worker_id":"x"}`, fmt.Sprint(now)},
		{"bad-at", fmt.Sprintf(good, "bad-at"), "", "soon"},
		{"ok", fmt.Sprintf(good, "ok"), "", fmt.Sprint(now)},
	} {
		rd.Client.HSet(ctx, rd.Prefix+"w:"+tc.id, "reg", tc.reg, "hb", tc.hb, "at", tc.at)
		rd.Client.ZAdd(ctx, rd.Prefix+"workers", redis.Z{Score: float64(now), Member: tc.id})
	}
	rs[0].reg.Sync(ctx)
	if diff := cmp.Diff(rs[0].local.take(), []string{"upsert ok t"}); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
}

// TestOutage: with Redis gone, workers learned from it stay routable for
// OutageGrace, directly heard ones stay as they are, and Err says why.
func TestOutage(t *testing.T) {
	srv, c := noRetryRedis(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, c, "{t}:", clk, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	a.reg.Upsert(reg("w1", "s1"))
	a.reg.Heartbeat(hb("w1", 2))
	b.reg.Sync(ctx)
	a.local.take()
	b.local.take()
	srv.Stop()
	clk.Advance(time.Second)
	b.reg.Sync(ctx)
	if b.reg.Err() == nil {
		t.Fatal("Err is nil with Redis down")
	}
	if diff := cmp.Diff(b.local.take(), []string{"hb w1 2"}); diff != "" {
		t.Errorf("in the grace period (-got +want):\n%s", diff)
	}
	a.reg.Sync(ctx) // A hears w1 directly: nothing to refresh
	if got := a.local.take(); len(got) != 0 {
		t.Errorf("replica A during the outage: %v", got)
	}
	clk.Advance(31 * time.Second)
	b.reg.Sync(ctx)
	if got := b.local.take(); len(got) != 0 {
		t.Errorf("after the grace period: %v", got)
	}
	srv.Restart(t)
	b.reg.Sync(ctx)
	if b.reg.Err() != nil {
		t.Errorf("Err after recovery: %v", b.reg.Err())
	}
}

// TestDisputeShared: a worker disputed by the auditor on replica A is out
// of rotation on B after B's next sync, once only, and on a replica that
// starts later; the dispute goes to the scheduler before the worker does,
// so it never routes there in between.
func TestDisputeShared(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, rd.Client, rd.Prefix, clk, 3)
	a, b, c := rs[0], rs[1], rs[2]
	ctx := context.Background()
	a.reg.Upsert(reg("w1", "s1"))
	a.reg.Upsert(reg("w2", "s2"))
	b.reg.Sync(ctx)
	a.local.take()
	b.local.take()

	a.reg.Dispute("w1", "audit dsp-1: response digests differ")
	if diff := cmp.Diff(a.local.take(), []string{"dispute w1 audit dsp-1: response digests differ"}); diff != "" {
		t.Errorf("replica A (-got +want):\n%s", diff)
	}
	b.reg.Sync(ctx)
	if diff := cmp.Diff(b.local.take(), []string{"dispute w1 audit dsp-1: response digests differ"}); diff != "" {
		t.Errorf("replica B (-got +want):\n%s", diff)
	}
	b.reg.Sync(ctx)
	a.reg.Sync(ctx)
	if got := append(a.local.take(), b.local.take()...); len(got) != 0 {
		t.Errorf("a dispute applied again: %v", got)
	}
	c.reg.Sync(ctx)
	got := c.local.take()
	if len(got) != 3 || got[0] != "dispute w1 audit dsp-1: response digests differ" {
		t.Errorf("late replica: %v, want the dispute first, then both workers", got)
	}
	if a.reg.Err() != nil || b.reg.Err() != nil {
		t.Errorf("Err while Redis is up: %v, %v", a.reg.Err(), b.reg.Err())
	}
}

// noRetryRedis starts a redis-server of the test's own (so it can be
// stopped) and a client that fails at once while it is down.
func noRetryRedis(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	opts, _ := redis.ParseURL(srv.URL)
	opts.MaxRetries, opts.DialerRetries = -1, 1
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// TestLinkWorkerStaysOnItsReplica: a worker that dialled replica A's
// worker link is reachable only over A's session. Before, B took its
// record as unusable and logged a warning for it on every sync (four a
// second per link worker), and a record from a replica that let it
// through would have had B route batches to a session it does not hold.
func TestLinkWorkerStaysOnItsReplica(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	var logs bytes.Buffer
	local := [2]*fakeLocal{newFakeLocal(), newFakeLocal()}
	var rs [2]*Registry
	for i := range rs {
		r, err := New(rd.Client, local[i], Options{Prefix: rd.Prefix, Clock: clk, Replica: fmt.Sprint("r", i),
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	w := reg("w1", "s1")
	w.URL = workers.LinkURL("0123456789abcdef")
	rs[0].Upsert(w)
	rs[0].Upsert(reg("w2", "s2")) // an HTTP worker is shared as before
	local[0].take()
	for range 3 {
		clk.Advance(100 * time.Millisecond)
		rs[1].Sync(context.Background())
		rs[0].Sync(context.Background())
	}
	if diff := cmp.Diff(local[1].take(), []string{"upsert w2 s2"}); diff != "" {
		t.Errorf("replica B (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(local[0].take(), []string(nil)); diff != "" {
		t.Errorf("replica A, which holds the link (-got +want):\n%s", diff)
	}
	if strings.Contains(logs.String(), "record skipped") {
		t.Errorf("a link worker's record was logged as invalid:\n%s", logs.String())
	}
	if linkScheme != workers.LinkScheme {
		t.Fatalf("linkScheme %q, workers.LinkScheme %q", linkScheme, workers.LinkScheme)
	}
}
