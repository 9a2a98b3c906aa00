package main

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/soak"
)

// TestSoakShort is `tollgate bench soak` for 20 s: mixed chat, streamed
// chat and embeddings at 50 req/s with receipts recorded. No request may
// fail, and after a 6 s warm-up goroutines and fds must not grow (a
// connection or goroutine leak per request shows within seconds). RSS gets
// a looser bound here than the 10 % of a 30-minute run: 14 s of a GOGC
// 400 % sawtooth on a shared machine is not a memory verdict.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s soak")
	}
	rep, err := runSoak(context.Background(), soakConfig{Duration: 20 * time.Second, Rate: 50, Sample: time.Second,
		Limits: soak.Limits{Warmup: 6 * time.Second, RSS: 0.5, Goroutines: 0.10, FDs: 0.10, Slack: 32}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rep.Growth {
		t.Logf("%-10s first %.0f last %.0f growth %+.1f%%", g.Series, g.First, g.Last, 100*g.Growth)
	}
	ok := 0
	for _, r := range rep.Load {
		ok += r.OK
	}
	t.Logf("%d requests answered, receipts %+v", ok, rep.Receipts)
	if !rep.Pass {
		t.Fatalf("soak failed: %v", rep.Failures)
	}
	if rep.Receipts.Pending == 0 {
		t.Error("no receipts recorded: the soak must run with receipts on")
	}
}
