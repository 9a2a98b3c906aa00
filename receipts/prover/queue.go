package prover

import (
	"context"
	"time"

	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

// runQueue is Run for a prover sharing a ledger.Queue with others (the
// Redis mode: `tollgate prover --redis URL`, any number of them). One loop
// (so the key set needs no lock) does two things in turn:
//
//   - planning, every Interval and whenever a job settles or the queue is
//     idle: close the batches that are due (as Step does, within
//     MaxOpenPerWorker counted over the whole queue) with AssignBatch, which
//     puts each on the queue atomically. Every prover plans; two closing
//     the same receipts race on AssignBatch and exactly one wins (the other
//     gets ledger.ErrNotPending). Provers sharing a queue must share their
//     key capacities, since whichever closes a batch picks its circuit size.
//   - proving: claim a job (a dead prover's first, after ClaimIdle; else a
//     new one), prove it while renewing the claim, store the outcome, and
//     acknowledge it. A batch that waits (its worker does not answer, see
//     backoff) or a stop leaves the job unacknowledged, so it is claimed
//     again (by any prover) after ClaimIdle: the retry interval of the
//     queue is at least ClaimIdle.
//
// A job is acknowledged only after its batch's outcome is stored, and the
// store keeps the first outcome of a batch only, so every receipt is proven
// exactly once however provers die or stall.
func (p *Pipeline) runQueue(ctx context.Context, q ledger.Queue) error {
	p.logger.Info("prover joined the shared proving queue", "consumer", p.cfg.Consumer, "claim_idle", p.cfg.ClaimIdle)
	var planned time.Time
	replan := true // a job settled or the queue was idle: a slot may be free
	for ctx.Err() == nil {
		if now := p.cfg.Clock.Now(); replan || now.Sub(planned) >= p.cfg.Interval {
			planned, replan = now, false
			if err := p.plan(ctx); err != nil && ctx.Err() == nil {
				p.logger.Error("prover: closing batches failed", "err", err)
			}
		}
		j, err := q.Claim(ctx, p.cfg.Consumer, p.cfg.ClaimIdle, p.cfg.Interval)
		if err != nil {
			if ctx.Err() == nil {
				p.logger.Error("proving queue: claim failed", "err", err)
				p.sleep(ctx, p.cfg.Interval)
			}
			continue
		}
		if j == nil {
			replan = true // waited Interval for a job: look for new work
			continue
		}
		settled, err := p.work(ctx, q, j)
		if err != nil && ctx.Err() == nil {
			p.logger.Warn("proving job not done; it will be claimed again", "job", j.ID, "batch", j.Batch.Seq, "err", err)
		}
		replan = replan || settled
	}
	return nil
}

// work proves one claimed job and acknowledges it once its outcome is
// stored; it reports whether the job's batch is settled (no longer open).
func (p *Pipeline) work(ctx context.Context, q ledger.Queue, j *ledger.Job) (bool, error) {
	if j.Finished() {
		p.logger.Info("proving job already finished by an earlier prover; acknowledged", "batch", j.Batch.Seq, "status", j.Batch.Status)
		return true, p.ack(ctx, q, j)
	}
	if j.Deliveries > 1 {
		p.logger.Info("taking over a proving job", "batch", j.Batch.Seq, "deliveries", j.Deliveries)
	}
	wctx, stop := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(p.cfg.ClaimIdle / 3)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if err := q.Touch(wctx, p.cfg.Consumer, j); err != nil && wctx.Err() == nil {
					p.logger.Warn("proving job: claim not renewed", "batch", j.Batch.Seq, "err", err)
				}
			}
		}
	}()
	_, settled, err := p.attempt(wctx, j.Batch)
	stop()
	<-renewed
	if err != nil || !settled {
		// Waiting (its worker does not answer, or a stop): left
		// unacknowledged, it is claimed again after ClaimIdle, by any
		// prover, and tried once its backoff allows.
		return false, err
	}
	return true, p.ack(ctx, q, j)
}

// ack acknowledges a settled job even when the prover is being stopped: its
// outcome is already stored, and an acknowledgement lost to the stop would
// leave the job to be claimed again (harmless, since the ledger keeps the
// first outcome, but it would be work for nothing).
func (p *Pipeline) ack(ctx context.Context, q ledger.Queue, j *ledger.Job) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return q.Ack(actx, j)
}

// plan closes and queues the batches that are due, within the per-worker
// bound on open batches (counted across every prover of the queue).
// Losing a race to another prover is not an error.
func (p *Pipeline) plan(ctx context.Context) error {
	p.refreshKeys()
	_, err := p.cut(ctx)
	return err
}
