package prover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

func TestBackoffDelays(t *testing.T) {
	bo := newBackoff(time.Second, time.Minute, nil)
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 32 * time.Second},
		{7, time.Minute}, {50, time.Minute},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.failures), func(t *testing.T) {
			if got := bo.delay(tt.failures); got != tt.want {
				t.Errorf("delay(%d) = %s, want %s", tt.failures, got, tt.want)
			}
		})
	}
	for _, r := range []struct {
		random float64
		want   time.Duration
	}{{0, 30 * time.Second}, {0.5, 45 * time.Second}, {0.999999, 60 * time.Second}} {
		bo.random = func() float64 { return r.random }
		got := bo.jittered(time.Minute)
		if got < r.want-time.Millisecond || got > r.want {
			t.Errorf("jitter %v of 1m = %s, want ~%s (uniform in [d/2, d))", r.random, got, r.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestCountersignOutcome(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, obs.CountersignUnreachable},
		{"no URL yet", errors.New("no URL recorded for worker"), obs.CountersignUnreachable},
		{"client timeout", fmt.Errorf("countersign: %w", timeoutErr{}), obs.CountersignTimeout},
		{"deadline", context.DeadlineExceeded, obs.CountersignTimeout},
		{"worker 503", &apierr.Error{Status: 503, Code: "worker_draining"}, obs.CountersignServerError},
		{"worker 500", apierr.Internal(errors.New("disk")), obs.CountersignServerError},
		{"credential not settled", &apierr.Error{Status: 401, Code: workers.CodeCountersignUnauthorized}, obs.CountersignUnauthorized},
		{"no such route", &apierr.Error{Status: 404}, obs.CountersignRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := countersignOutcome(tt.err); got != tt.want {
				t.Errorf("outcome %q, want %q", got, tt.want)
			}
		})
	}
}

// down is a worker that never answers.
func down(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) {
	return nil, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
}

func (e *env) counts() ledger.Counts {
	e.t.Helper()
	n, err := e.ledger.Counts(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestUnansweredBatchWaitsAndIsRecutNeverFailed plays finding 6: a worker
// that does not countersign used to fail its receipts after 10 minutes. Now
// they stay pending, with the reason on the receipt; after the give-up
// window (from the first offer) the batch is re-cut, its receipts go back to
// the pool, and once the worker answers they are proven.
func TestUnansweredBatchWaitsAndIsRecutNeverFailed(t *testing.T) {
	e := newEnv(t)
	ids := e.record("w", 3, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	var mu sync.Mutex
	answering := false
	calls := 0
	p := e.pipeline(func(ctx context.Context, id string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !answering {
			return down(ctx, id, req)
		}
		return e.signer.Countersign(ctx, req)
	})
	p.cfg.GiveUpAfter = time.Hour
	if _, err := p.Step(ctx); err != nil {
		t.Fatal(err)
	}
	r := e.receipt(ids[0])
	if r.Status != receipts.StatusPending || !strings.Contains(r.PendingReason, "has not countersigned yet (unreachable, 1 attempts") {
		t.Fatalf("after one failed offer: %s %q", r.Status, r.PendingReason)
	}
	// Backoff: passes within the wait do not call the worker again.
	for range 5 {
		p.Step(ctx)
	}
	if calls != 1 {
		t.Errorf("%d countersign calls within the first backoff, want 1", calls)
	}
	// An hour of retries, the wait doubling up to BackoffMax (5m).
	for e.clock.Advance(10 * time.Second); e.clock.Now().Sub(r.Time) < 59*time.Minute; e.clock.Advance(10 * time.Second) {
		p.Step(ctx)
	}
	if calls < 10 || calls > 25 {
		t.Errorf("%d calls in an hour of backoff from 1s to 5m", calls)
	}
	if r := e.receipt(ids[0]); r.Status != receipts.StatusPending || e.counts().Failed != 0 {
		t.Fatalf("after an hour: %s, counts %+v: want pending, none failed", r.Status, e.counts())
	}
	e.clock.Advance(2 * time.Minute) // past the give-up window
	p.Step(ctx)
	// Batch 1 was re-cut, its receipts went back to the pool and were cut
	// again into batch 2, offered at once (the probe of a worker that may
	// be back).
	if b, err := e.ledger.Store().GetBatch(ctx, 1); err != nil || b.Status != ledger.StatusRecut || !strings.Contains(b.Error, "re-cut") {
		t.Fatalf("batch 1 after giving up: %+v, %v", b, err)
	}
	open, _ := e.ledger.Store().OpenBatches(ctx)
	if len(open) != 1 || open[0].Seq != 2 || !cmp.Equal(open[0].Receipts, ids) {
		t.Fatalf("open after the re-cut: %+v", open)
	}
	if r := e.receipt(ids[0]); r.Status != receipts.StatusPending || e.counts().Failed != 0 {
		t.Fatalf("after the re-cut: %s, counts %+v", r.Status, e.counts())
	}
	// The worker comes back.
	mu.Lock()
	answering = true
	mu.Unlock()
	e.clock.Advance(10 * time.Minute)
	if n, err := p.Step(ctx); err != nil || n != 3 {
		t.Fatalf("worker back: proved %d, err %v", n, err)
	}
	if n := e.counts(); n != (ledger.Counts{Proven: 3}) {
		t.Errorf("counts %+v, want every receipt proven, none failed", n)
	}
}

// TestDeadlineCountsFromOffer: a batch cut long ago but never offered (the
// prover stopped first) is not failed at its first error: the old prover
// counted 10 minutes from the cut and failed it at once.
func TestDeadlineCountsFromOffer(t *testing.T) {
	e := newEnv(t)
	ids := e.record("d", 2, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	stopping, stop := context.WithCancel(ctx)
	p := e.pipeline(func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		stop()
		return nil, context.Canceled
	})
	p.Step(stopping) // cut, then stopped before the worker answered
	e.clock.Advance(11 * time.Minute)
	p = e.pipeline(func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		return nil, &apierr.Error{Status: 502, Message: "bad gateway"}
	})
	p.Step(ctx)
	if r := e.receipt(ids[0]); r.Status != receipts.StatusPending || !strings.Contains(r.PendingReason, "server_error") {
		t.Fatalf("receipt %s %q %q: want pending with the reason", r.Status, r.PendingReason, r.Error)
	}
	open, _ := e.ledger.Store().OpenBatches(ctx)
	if len(open) != 1 || !open[0].OfferedAt.Equal(e.clock.Now()) || open[0].Attempts != 1 {
		t.Errorf("open batch %+v: want offered now, 1 attempt", open)
	}
}

// TestBacklogCutWithinBound: the old prover cut the whole backlog at once
// (13 batches of 8 for 100 receipts, all for a worker that was down); now at
// most MaxOpenPerWorker batches are open per worker.
func TestBacklogCutWithinBound(t *testing.T) {
	e := newEnv(t)
	e.record("b", 100, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	p := e.pipeline(down)
	for range 3 {
		p.Step(ctx)
		e.clock.Advance(time.Hour / 2)
	}
	open, _ := e.ledger.Store().OpenBatches(ctx)
	if len(open) > p.cfg.MaxOpenPerWorker {
		t.Errorf("%d open batches for one worker, want at most %d", len(open), p.cfg.MaxOpenPerWorker)
	}
	if n := e.counts(); n != (ledger.Counts{Pending: 100}) {
		t.Errorf("counts %+v, want 100 pending", n)
	}
	// The rest waits in the pool, cut as batches are proven (see
	// TestBacklogSurvivesRestarts for a backlog proven to the end).
}

// signedLog counts, per request ID, the batches the worker signed it in
// (and gave out, or lost the answer to).
type signedLog struct {
	mu sync.Mutex
	by map[string]map[uint64]bool
}

func (l *signedLog) add(req *workers.CountersignRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = map[string]map[uint64]bool{}
	}
	for _, c := range req.Completions {
		if l.by[c.RequestID] == nil {
			l.by[c.RequestID] = map[uint64]bool{}
		}
		l.by[c.RequestID][req.Sequence] = true
	}
}

func (l *signedLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, seqs := range l.by {
		if len(seqs) != 1 {
			t.Errorf("request %s countersigned in batches %v", id, seqs)
		}
	}
}

// TestLostAnswerGetsTheSameSignature: the worker signs, the answer is lost
// (the worker is killed, or the connection drops): the retry gets the same
// signature and the batch is proven under its own sequence.
func TestLostAnswerGetsTheSameSignature(t *testing.T) {
	e := newEnv(t)
	ids := e.record("l", 3, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	var log signedLog
	lose := true
	p := e.pipeline(func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		resp, err := e.signer.Countersign(ctx, req)
		if err == nil {
			log.add(req)
		}
		if lose {
			lose = false
			return nil, errors.New("countersign: read: connection reset by peer")
		}
		return resp, err
	})
	p.Step(ctx)
	e.clock.Advance(time.Minute)
	if n, err := p.Step(ctx); err != nil || n != 3 {
		t.Fatalf("retry proved %d, err %v", n, err)
	}
	if r := e.receipt(ids[0]); r.Batch.Public.Sequence != 1 {
		t.Errorf("proven in batch %d, want 1", r.Batch.Public.Sequence)
	}
	log.check(t)
}

// TestRecutSignedBatchIsRevived: the worker signed batch 1 but the answer
// was lost and the prover gave up on it and re-cut it. The new batch is
// refused (already countersigned in 1): the prover reopens batch 1 as it
// was signed and proves it, so no request is ever signed into two batches
// and none fails.
func TestRecutSignedBatchIsRevived(t *testing.T) {
	e := newEnv(t)
	ids := e.record("r", 3, true)
	e.clock.Advance(time.Second)
	ctx := context.Background()
	var log signedLog
	state := "lose" // lose the answer, then be down, then answer
	p := e.pipeline(func(ctx context.Context, id string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		switch state {
		case "lose":
			if _, err := e.signer.Countersign(ctx, req); err == nil {
				log.add(req)
			}
			state = "down"
			return nil, errors.New("countersign: EOF")
		case "down":
			return down(ctx, id, req)
		}
		resp, err := e.signer.Countersign(ctx, req)
		if err == nil {
			log.add(req)
		}
		return resp, err
	})
	p.Step(ctx)
	e.clock.Advance(2 * time.Hour) // past the give-up window: batch 1 is re-cut (and cut again as 2)
	p.Step(ctx)
	if b, err := e.ledger.Store().GetBatch(ctx, 1); err != nil || b.Status != ledger.StatusRecut {
		t.Fatalf("batch 1 after giving up: %+v, %v", b, err)
	}
	state = "answer"
	for i := 0; i < 10 && e.counts().Proven < 3; i++ {
		e.clock.Advance(10 * time.Minute)
		p.Step(ctx)
	}
	if n := e.counts(); n != (ledger.Counts{Proven: 3}) {
		t.Fatalf("counts %+v, want 3 proven, none failed", n)
	}
	for _, id := range ids {
		if r := e.receipt(id); r.Batch.Public.Sequence != 1 {
			t.Errorf("%s proven in batch %d, want the signed batch 1", id, r.Batch.Public.Sequence)
		}
	}
	log.check(t)
}

// TestStoppedProverCutsNothing: SIGTERM (ctx done) stops cutting; the
// backlog stays in the pool, pending, for the next start.
func TestStoppedProverCutsNothing(t *testing.T) {
	e := newEnv(t)
	e.record("s", 30, true)
	e.clock.Advance(time.Second)
	ctx, stop := context.WithCancel(context.Background())
	var once sync.Once
	p := e.pipeline(func(cctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		once.Do(stop) // SIGTERM while the first batch is being countersigned
		return e.signer.Countersign(cctx, req)
	})
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := e.ledger.Store()
	open, _ := st.OpenBatches(context.Background())
	pending, _ := st.Pending(context.Background())
	if len(open) > p.cfg.MaxOpenPerWorker || len(pending) < 30-8*p.cfg.MaxOpenPerWorker {
		t.Errorf("after stop: %d open, %d in the pool", len(open), len(pending))
	}
	if n := e.counts(); n.Failed != 0 || n.Pending+n.Proven != 30 {
		t.Errorf("counts %+v", n)
	}
}

// TestRefusalByCode: what the prover does with each kind of explicit
// refusal. Only the records refused for what they are fail; a record
// signed into a batch this ledger holds open is never failed.
func TestRefusalByCode(t *testing.T) {
	refusal := func(records ...workers.RefusedRecord) error {
		return &workers.RefusedError{Err: apierr.Forbidden("countersign_refused", "refused"), Records: records}
	}
	tests := []struct {
		name       string
		refuse     func(req *workers.CountersignRequest, proven uint64) error
		wantFailed int    // of the batch's 2 receipts
		wantError  string // in the failed receipt's error
		wantOpen   bool   // the batch is still open (waits)
	}{
		{"unknown record", func(req *workers.CountersignRequest, _ uint64) error {
			return refusal(workers.RefusedRecord{RequestID: req.Completions[0].RequestID, Code: workers.RefuseUnknownRecord, Reason: "never produced"})
		}, 1, "never produced", false},
		{"aged out", func(req *workers.CountersignRequest, _ uint64) error {
			return refusal(workers.RefusedRecord{RequestID: req.Completions[1].RequestID, Code: workers.RefuseRecordExpired, Reason: "aged out"})
		}, 1, "record_expired", false},
		{"signed in a batch this ledger does not hold", func(req *workers.CountersignRequest, _ uint64) error {
			return refusal(workers.RefusedRecord{RequestID: req.Completions[0].RequestID, Code: workers.RefuseAlreadyCountersigned, Sequence: 99, Reason: "in 99"})
		}, 1, "does not hold", false},
		{"signed in a proven batch: a second record", func(req *workers.CountersignRequest, proven uint64) error {
			return refusal(workers.RefusedRecord{RequestID: req.Completions[0].RequestID, Code: workers.RefuseAlreadyCountersigned, Sequence: proven, Reason: "in the proven one"})
		}, 1, "a second record", false},
		{"a refusal naming no record", func(*workers.CountersignRequest, uint64) error { return refusal() }, 2, "refused", false},
		{"signed under this very sequence, other contents", func(req *workers.CountersignRequest, _ uint64) error {
			return refusal(workers.RefusedRecord{RequestID: req.Completions[0].RequestID, Code: workers.RefuseAlreadyCountersigned, Sequence: req.Sequence, Reason: "same seq"})
		}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			// Batch 1, already proven (its outcome stored directly).
			done := e.record("done", 1, true)
			e.clock.Advance(time.Second)
			b1 := &ledger.Batch{WorkerID: e.wid, Model: model.Name, ModelDigest: model.Digest, Capacity: 8, Receipts: done, CreatedAt: e.clock.Now()}
			if err := e.ledger.Store().AssignBatch(ctx, b1); err != nil {
				t.Fatal(err)
			}
			b1.Status = receipts.StatusProven
			if err := e.ledger.Store().FinishBatch(ctx, b1); err != nil {
				t.Fatal(err)
			}
			ids := e.record("x", 2, true)
			e.clock.Advance(time.Second)
			p := e.pipeline(func(_ context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
				return nil, tt.refuse(req, b1.Seq)
			})
			if _, err := p.Step(ctx); err != nil {
				t.Fatal(err)
			}
			failed := 0
			for _, id := range ids {
				r := e.receipt(id)
				switch r.Status {
				case receipts.StatusFailed:
					failed++
					if !strings.Contains(r.Error, tt.wantError) {
						t.Errorf("%s: error %q, want it to say %q", id, r.Error, tt.wantError)
					}
				case receipts.StatusPending:
				default:
					t.Errorf("%s: %s", id, r.Status)
				}
			}
			if failed != tt.wantFailed {
				t.Errorf("%d failed, want %d", failed, tt.wantFailed)
			}
			open, _ := e.ledger.Store().OpenBatches(ctx)
			if got := len(open) == 1 && open[0].Seq == 2; got != tt.wantOpen {
				t.Errorf("batch 2 still open: %v, want %v (open %+v)", got, tt.wantOpen, open)
			}
		})
	}
}

// TestCountersignOutcomesAreCounted: why receipts wait is in a metric too.
func TestCountersignOutcomesAreCounted(t *testing.T) {
	prov, shutdown, err := obs.Setup(context.Background(), obs.Config{ServiceName: "test", Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // in-memory
	e := newEnv(t)
	e.record("m", 2, true)
	e.clock.Advance(time.Second)
	p := e.pipeline(down)
	p.cfg.Obs = prov
	p.Step(context.Background())
	var buf strings.Builder
	if err := prov.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	if want := `tollgate_receipts_countersign_total{outcome="unreachable"`; !strings.Contains(buf.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// A proof that fails (here: the proving child cannot start) leaves its
// receipts pending with a reason their customer can read, but without the
// operator's internals (file paths, the child's text); the log has them.
func TestProvingFailureReasonIsPublic(t *testing.T) {
	e := newEnv(t)
	ids := e.record("w", 2, true)
	e.clock.Advance(time.Second)
	const secretPath = "/srv/operator-secret/prove-child-missing"
	child := zk.NewChild(func() *exec.Cmd { return exec.Command(secretPath) }, nil, nil)
	t.Cleanup(func() { child.Close() })
	var log strings.Builder
	p, err := New(e.ledger, Config{KeyDir: e.keys, MaxAge: time.Second, Clock: e.clock, Random: half, Child: child,
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Countersign: func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return e.signer.Countersign(ctx, req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.publicReason(ids[0], "the proof failed", secretPath, log.String())
}

// publicReason checks that receipt id is pending with a reason holding
// want but not secret, which the operator's log holds.
func (e *env) publicReason(id, want, secret, log string) {
	e.t.Helper()
	r := e.receipt(id)
	if r.Status != receipts.StatusPending || !strings.Contains(r.PendingReason, want) {
		e.t.Fatalf("receipt %s %q, want pending with %q", r.Status, r.PendingReason, want)
	}
	if strings.Contains(r.PendingReason, secret) {
		e.t.Fatalf("the receipt's pending reason shows %q: %q", secret, r.PendingReason)
	}
	if !strings.Contains(log, secret) {
		e.t.Fatalf("the operator's log lacks the detail %q:\n%s", secret, log)
	}
}

// A countersign that fails leaves the receipts pending with a reason their
// customer reads: the worker's address (the URL the gateway dials) and the
// error's own text go to the operator's log only, the reason says the
// outcome.
func TestUnansweredReasonIsPublic(t *testing.T) {
	e := newEnv(t)
	ids := e.record("w", 2, true)
	e.clock.Advance(time.Second)
	const secretAddr = "10.9.8.7:9001"
	var log strings.Builder
	p, err := New(e.ledger, Config{KeyDir: e.keys, MaxAge: time.Second, Clock: e.clock, Random: half,
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Countersign: func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return nil, fmt.Errorf("countersign: %w", &url.Error{Op: "Post", URL: "http://" + secretAddr + "/v1/countersign",
				Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}})
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.publicReason(ids[0], "has not countersigned yet (unreachable, 1 attempts", secretAddr, log.String())
}
