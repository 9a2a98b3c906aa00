package prover

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers"
)

func TestOldBacklogCutAtOnce(t *testing.T) {
	e := newEnv(t)
	e.record("b", 100, true)
	e.clock.Advance(time.Second)
	down := errors.New("connection refused")
	p := e.pipeline(func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) { return nil, down })
	p.Step(context.Background())
	open, _ := e.ledger.Store().OpenBatches(context.Background())
	if len(open) > 4 {
		t.Fatalf("ATTACK SUCCEEDED: the whole backlog was cut at once: %d open batches for one unreachable worker", len(open))
	}
}

func TestOldDeadlineFromCut(t *testing.T) {
	e := newEnv(t)
	ids := e.record("d", 2, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	// The batch is cut, then the prover stops before offering it (crash).
	stop := errors.New("prover stopped")
	p := e.pipeline(func(ctx context.Context, _ string, _ *workers.CountersignRequest) (*workers.CountersignResponse, error) { return nil, stop })
	p.Step(ctx)
	// It restarts 11 minutes later; the worker has one hiccup on the first offer.
	e.clock.Advance(11 * time.Minute)
	hiccup := errors.New("502 bad gateway")
	p = e.pipeline(func(ctx context.Context, _ string, _ *workers.CountersignRequest) (*workers.CountersignResponse, error) { return nil, hiccup })
	p.Step(ctx)
	if r := e.receipt(ids[0]); r.Status == receipts.StatusFailed {
		t.Fatalf("ATTACK SUCCEEDED: acknowledged receipt failed at its first countersign error: %q", r.Error)
	}
}

func TestOldOneRefusedRecordFailsItsBatch(t *testing.T) {
	e := newEnv(t)
	good := e.record("good", 3, true)
	e.record("forged", 1, false)
	e.clock.Advance(time.Second)
	p := e.pipeline(nil)
	p.Step(context.Background())
	if r := e.receipt(good[0]); r.Status == receipts.StatusFailed {
		t.Fatalf("ATTACK SUCCEEDED: a good acknowledged receipt failed because another record in its batch was refused: %q", r.Error)
	}
}
