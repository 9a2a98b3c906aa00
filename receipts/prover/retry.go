package prover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

// A batch that cannot be countersigned or proven now is never failed for
// it: it waits and is tried again. Two kinds of waiting are tracked, in
// memory (a restarted prover simply tries at once):
//
//   - per worker: a countersign call that did not get the worker's answer
//     (unreachable, timeout, 5xx, 401 while a new credential settles, any
//     other 4xx) backs off the worker — none of its batches is offered and
//     none is cut for it until the wait is over, then one batch probes it;
//   - per batch: anything else that stops one batch (a countersignature that
//     does not check, a proving error, a worker not admitted for the model,
//     no key for the capacity).
//
// The wait doubles from BackoffMin up to BackoffMax, with jitter: a wait of
// d is drawn uniformly from [d/2, d), so provers sharing a queue do not
// retry in step. Each failure is stored on the batch (Attempts,
// PendingReason: shown as the receipt's pending_reason) and counted
// (tollgate.receipts.countersign{outcome}). A batch first offered more than
// GiveUpAfter ago is re-cut: its receipts go back to the pending pool, to be
// batched again for the worker once it answers. Only records the worker
// explicitly refuses fail.
type backoff struct {
	min, max time.Duration
	random   func() float64 // [0, 1)

	mu      sync.Mutex
	workers map[string]*waiting
	batches map[uint64]*waiting
}

// waiting is one worker's or batch's retry state.
type waiting struct {
	failures int
	until    time.Time
	since    time.Time // first failure of this run
	reason   string
}

func newBackoff(min, max time.Duration, random func() float64) *backoff {
	return &backoff{min: min, max: max, random: random, workers: map[string]*waiting{}, batches: map[uint64]*waiting{}}
}

// delay is the wait after the n-th failure in a row (n ≥ 1), before
// jitter: min·2^(n-1), capped at max.
func (bo *backoff) delay(n int) time.Duration {
	d := bo.min
	for i := 1; i < n && d < bo.max; i++ {
		d *= 2
	}
	return min(d, bo.max)
}

// jittered draws the actual wait for delay d: uniform in [d/2, d).
func (bo *backoff) jittered(d time.Duration) time.Duration {
	return d/2 + time.Duration(bo.random()*float64(d/2))
}

// bumpLocked counts one more failure: the next wait is drawn, then the
// reason written from the updated state.
func (bo *backoff) bumpLocked(w *waiting, now time.Time, reason func(waiting) string) waiting {
	w.failures++
	w.until = now.Add(bo.jittered(bo.delay(w.failures)))
	w.reason = reason(*w)
	return *w
}

// failWorker records a countersign call that got no answer from workerID.
func (bo *backoff) failWorker(workerID string, now time.Time, reason func(waiting) string) waiting {
	bo.mu.Lock()
	defer bo.mu.Unlock()
	w := bo.workers[workerID]
	if w == nil {
		w = &waiting{since: now}
		bo.workers[workerID] = w
	}
	return bo.bumpLocked(w, now, reason)
}

// failBatch records a failure of one batch.
func (bo *backoff) failBatch(seq uint64, now time.Time, reason func(waiting) string) waiting {
	bo.mu.Lock()
	defer bo.mu.Unlock()
	w := bo.batches[seq]
	if w == nil {
		w = &waiting{since: now}
		bo.batches[seq] = w
	}
	return bo.bumpLocked(w, now, reason)
}

// workerWaiting reports whether workerID must not be tried now, and why.
func (bo *backoff) workerWaiting(workerID string, now time.Time) (waiting, bool) {
	bo.mu.Lock()
	defer bo.mu.Unlock()
	if w := bo.workers[workerID]; w != nil && now.Before(w.until) {
		return *w, true
	}
	return waiting{}, false
}

// ready reports whether b may be tried now: neither its worker nor the
// batch itself is waiting.
func (bo *backoff) ready(b *ledger.Batch, now time.Time) bool {
	bo.mu.Lock()
	defer bo.mu.Unlock()
	if w := bo.workers[b.WorkerID]; w != nil && now.Before(w.until) {
		return false
	}
	if w := bo.batches[b.Seq]; w != nil && now.Before(w.until) {
		return false
	}
	return true
}

// answered clears the worker's wait: it answered a countersign request.
func (bo *backoff) answered(workerID string) {
	bo.mu.Lock()
	delete(bo.workers, workerID)
	bo.mu.Unlock()
}

// done forgets a batch that was proven, failed or re-cut.
func (bo *backoff) done(seq uint64) {
	bo.mu.Lock()
	delete(bo.batches, seq)
	bo.mu.Unlock()
}

// countersignOutcome classifies a countersign call's error for the metric
// and the reason shown on the receipts. Every outcome but a refusal is the
// worker not answering yet: the batch waits.
func countersignOutcome(err error) string {
	var ae *apierr.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return obs.CountersignTimeout
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		return obs.CountersignUnauthorized
	case errors.As(err, &ae) && ae.Status >= 500:
		return obs.CountersignServerError
	case errors.As(err, &ae) && ae.Status >= 400:
		return obs.CountersignRejected
	}
	return obs.CountersignUnreachable
}

// waitReason is the pending_reason of a batch whose countersign failed.
// Its customer reads it: the outcome, not the error, whose text (the
// worker's address, the worker's own message) is for the operator's log.
func waitReason(workerID, outcome string, w waiting) string {
	return fmt.Sprintf("worker %s has not countersigned yet (%s, %d attempts since %s); the operator's log has the error; next attempt after %s",
		workerID, outcome, w.failures, w.since.UTC().Format(time.RFC3339), w.until.UTC().Format(time.RFC3339))
}
