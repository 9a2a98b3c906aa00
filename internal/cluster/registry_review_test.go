package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/redistest"
)

// Regression test from the review of the dispute change; the bug it caught: syncDisputes' error is Sync's error: a PREFIX:disputed key of
// the wrong type (or any HGETALL failure) turns every sync into an
// "outage", so worker records other replicas wrote are never applied.
func TestReviewDisputedKeyWrongTypeStopsSync(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, rd.Client, rd.Prefix, clk, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	rd.Client.Set(ctx, rd.Prefix+"disputed", "x", 0)
	a.reg.Upsert(reg("w1", "s1"))
	b.reg.Sync(ctx)
	if got := b.local.take(); len(got) == 0 {
		t.Errorf("replica B applied no worker record (Err %v)", b.reg.Err())
	}
}

// Regression test from the review of the dispute change; the bug it caught: a dispute made while Redis is unreachable is never shared:
// Registry.Dispute marks it in r.disputed before HSET, and nothing retries
// it, so after recovery the other replicas keep routing to the worker.
func TestReviewDisputeDuringOutageNeverShared(t *testing.T) {
	srv, c := noRetryRedis(t)
	clk := clock.NewFake(time.Now())
	rs := newReplicas(t, c, "{t}:", clk, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	a.reg.Upsert(reg("w1", "s1"))
	b.reg.Sync(ctx)
	a.local.take()
	b.local.take()
	srv.Stop()
	a.reg.Dispute("w1", "audit dsp-1")
	srv.Restart(t)
	for range 3 {
		a.reg.Sync(ctx)
		b.reg.Sync(ctx)
	}
	for _, call := range b.local.take() {
		if call == "dispute w1 audit dsp-1" {
			return
		}
	}
	t.Errorf("replica B never applied the dispute replica A made during the outage")
}
