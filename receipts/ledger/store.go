// Package ledger is Tollgate's durable receipt ledger: it records every
// completion as a receipt leaf (fsync'd, group-committed) before the
// response that names it completes, serves receipts and the export cursor,
// keeps the model registry, and holds the prover's batches. It implements
// the gateway's Ledger interface.
//
// The embedded default Store is WALStore: an append-only, fdatasync'd
// write-ahead log (receipts.db-wal) in front of the bbolt file
// (receipts.db, BoltStore). bbolt alone rewrites B+tree pages and fsyncs
// twice per commit, so even group-committed it held 64 concurrent writers
// to ~7,500 receipts/s with a 10.8 ms single-writer p99 on the 2-core dev
// box. The log makes an acknowledgement cost one sequential write and one
// fdatasync per commit group: frames (length, CRC-32C, seq, count, commit
// group, the request's entries) are written in place over zero-filled or
// already-applied space, so the sync never waits for a size change. An
// applier moves acknowledged records into bbolt in large transactions
// (every ApplyDelay, at once when a read waits), where the export cursor,
// the per-subject, per-worker and request-ID indexes and the batch
// transactions stay exactly as before — that is why bbolt stays: it keeps
// "assign a batch and take its receipts out of pending" one atomic
// transaction, and every existing ledger file opens unchanged. Batch and
// meta writes go straight to bbolt (they are off the request path) after
// waiting for the applier, so they see every acknowledged receipt.
// Duplicate checks stay exact: an in-memory index of logged-but-unapplied
// records plus a bbolt snapshot. bbolt's entries sequence is the applied
// mark, written with the records, so OpenBolt (whoever opens the file
// first: gateway, prover, registry command) replays exactly the log past
// it, drops a torn final group and refuses a damaged frame that a later
// group's intact frame follows (ErrCorruptLog). Pebble was the
// alternative: another storage engine and dependency, with the batch
// transactions and indexes to rebuild on it, for a gain a log file in
// front of bbolt gets in a few hundred lines.
//
// Measured with `nice -n 10 go test -run '^$' -bench 'Append/bolt'
// -benchtime 20000x -count 2 ./receipts/ledger/` on the shared 2-core dev
// box, in one run (noisy: another engineer's builds share its CPUs and
// disk; under their load bbolt alone fell to 343 records/s and 7,500/s):
//
//	                   bolt (before)          bolt+wal (WALStore)
//	1 writer           ~950/s, p99 2.7-4.8 ms  ~3,400/s, p50 0.27 ms, p99 0.64-0.93 ms
//	64 writers         ~18,000/s               ~33,500-50,800/s
//
// With the applier switched off the log alone gave a p99 of ~1.0 ms, so
// the single-writer p99 is the disk's own under contention, and bbolt's
// transactions (every ApplyDelay) push it over 1 ms when the box is busy
// (1.5-4.9 ms seen in loaded runs).
package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// Entry is one receipt as stored: the completion record (or, for a void
// receipt, the void record instead), its position in the ledger and, once
// batched, its batch and leaf index.
type Entry struct {
	Seq uint64 `json:"seq"` // ledger order, from 1
	// SubjectSeq is the entry's position among its subject's entries, from
	// 1 (0: no subject, or recorded before the per-subject index): the
	// cursor of a client's own export, which says nothing of other keys'
	// traffic.
	SubjectSeq uint64           `json:"subject_seq,omitempty"`
	ID         string           `json:"id"`
	Completion *task.Completion `json:"completion"`
	// Void, set instead of Completion, records a receipt ID that names
	// nothing billable. A void entry is never pending and never batched.
	Void       *task.Void `json:"void,omitempty"`
	RecordedAt time.Time  `json:"recorded_at"`
	BatchSeq   uint64     `json:"batch_seq,omitempty"` // 0 while pending
	Index      int        `json:"index,omitempty"`     // leaf slot in the batch
	// Traceparent is the W3C traceparent of the request that recorded it,
	// so the prover's batch span can link to the request's trace.
	Traceparent string `json:"traceparent,omitempty"`
	// PendingReason says why a receipt is back in the pending pool (its
	// batch was re-cut; see RecutBatch). Cleared when it is batched again.
	PendingReason string `json:"pending_reason,omitempty"`
	// Failure is set when the worker explicitly refused to countersign this
	// record: the receipt is failed, for that reason, and never batched
	// again. It is the only way a receipt fails on its own, outside a
	// failed batch.
	Failure string `json:"failure,omitempty"`
}

// Subject is the API key ID the entry belongs to.
func (e *Entry) Subject() string {
	switch {
	case e.Completion != nil:
		return e.Completion.Subject
	case e.Void != nil:
		return e.Void.Subject
	}
	return ""
}

// Batch is one group of receipts of one worker and one model version,
// assigned durably before proving so that a restart resumes it instead of
// proving its receipts again.
type Batch struct {
	Seq         uint64    `json:"seq"`
	WorkerID    string    `json:"worker_id"`
	Model       string    `json:"model"`
	ModelDigest string    `json:"model_digest"`
	Capacity    int       `json:"capacity"`
	Receipts    []string  `json:"receipts"` // receipt IDs in leaf order
	Status      string    `json:"status"`   // receipts.StatusPending until proven or failed; StatusRecut once re-cut
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"` // when it was cut: the batch time
	// OfferedAt is when the prover first asked the worker to countersign
	// the batch; its give-up window counts from here, not from CreatedAt.
	// Zero until a failed attempt stores it (see UpdateBatch).
	OfferedAt time.Time `json:"offered_at,omitzero"`
	// Attempts counts failed countersign attempts; PendingReason is the
	// last failure, shown on the batch's receipts while they wait.
	Attempts      int                   `json:"attempts,omitempty"`
	PendingReason string                `json:"pending_reason,omitempty"`
	Public        *receipts.BatchPublic `json:"public,omitempty"`
	Leaves        []string              `json:"leaves,omitempty"` // leaf hashes in slot order, set when proven
	Signature     string                `json:"signature,omitempty"`
	Proof         string                `json:"proof,omitempty"`
	VKID          string                `json:"vk_id,omitempty"`
	Circuit       string                `json:"circuit,omitempty"`
	ProvenAt      time.Time             `json:"proven_at,omitzero"`
}

// Store is what the ledger needs of durable storage. Every write method
// returns only once the write is durable (fsync'd).
type Store interface {
	// Append stores new entries in order, assigning their Seq. Concurrent
	// calls are group-committed. An entry whose receipt ID is taken fails
	// with ErrDuplicate, one whose request ID is already recorded (under
	// any receipt ID) with ErrDuplicateRequest: one record per request.
	Append(ctx context.Context, entries []*Entry) error
	// Get returns an entry by receipt ID (apierr 404 if unknown) and its
	// batch, if it has one.
	Get(ctx context.Context, id string) (*Entry, *Batch, error)
	// List returns up to limit entries with Seq > after, in order, with
	// their batches.
	List(ctx context.Context, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error)
	// ListSubject is List over one subject's entries: up to limit entries
	// of that subject with SubjectSeq > after, in order. It reads the
	// subject's own index, so a page costs the same however many other
	// subjects' entries lie between.
	ListSubject(ctx context.Context, subject string, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error)
	// Entries returns entries by receipt ID, in the order asked.
	Entries(ctx context.Context, ids []string) ([]*Entry, error)
	// Pending returns the entries not yet in a batch, in order (void
	// entries never are).
	Pending(ctx context.Context) ([]*Entry, error)
	// AssignBatch gives b the next batch sequence, stores it and moves its
	// receipts out of pending, atomically. It fails if any receipt is no
	// longer pending.
	AssignBatch(ctx context.Context, b *Batch) error
	// OpenBatches returns batches assigned but neither proven nor failed
	// nor re-cut.
	OpenBatches(ctx context.Context) ([]*Batch, error)
	// FinishBatch stores a batch's outcome (proof or failure). Finishing a
	// batch that is no longer open (finished or re-cut) is a no-op.
	FinishBatch(ctx context.Context, b *Batch) error

	// PendingWorkers lists the workers that have receipts waiting to be
	// batched, and PendingFor returns up to limit of one worker's, oldest
	// first: the prover cuts per worker without reading the whole pool.
	PendingWorkers(ctx context.Context) ([]string, error)
	PendingFor(ctx context.Context, workerID string, limit int) ([]*Entry, error)
	// UpdateBatch stores an open batch's countersign progress (OfferedAt,
	// Attempts, PendingReason); a no-op for a batch no longer open.
	UpdateBatch(ctx context.Context, b *Batch) error
	// RecutBatch ends an open batch without an outcome, atomically: the
	// receipts named in failed become failed with their reason (the worker
	// refused them), every other receipt goes back to the pending pool with
	// reason as its PendingReason, to be batched again. The batch keeps its
	// receipts and time, with status StatusRecut, so ReviveBatch can reopen
	// it. ErrNotOpen if the batch is no longer open.
	RecutBatch(ctx context.Context, b *Batch, reason string, failed map[string]string) error
	// ReviveBatch reopens a re-cut batch exactly as it was cut (same
	// sequence, receipts, leaf order and time), atomically taking its
	// receipts out of the pending pool: the prover does this when the
	// worker answers that it already countersigned that batch. ErrNotPending
	// if any of its receipts is no longer pending, ErrNotOpen if the batch
	// is not re-cut.
	ReviveBatch(ctx context.Context, seq uint64) (*Batch, error)
	// GetBatch returns a batch by sequence, ErrNoBatch if there is none.
	GetBatch(ctx context.Context, seq uint64) (*Batch, error)
	// Meta reads and PutMeta writes small named values (the model registry,
	// worker URLs).
	Meta(ctx context.Context, key string) ([]byte, error)
	PutMeta(ctx context.Context, key string, value []byte) error
	Close() error
}

// StatusRecut is the status of a batch the prover gave up on and re-cut:
// its receipts went back to the pending pool (RecutBatch). It is never a
// receipt's status.
const StatusRecut = "recut"

// ErrNotOpen is returned by RecutBatch and ReviveBatch for a batch that is
// not in the state they need.
var ErrNotOpen = errors.New("ledger: batch is not open")

// ErrNoBatch is returned by GetBatch for a sequence no batch has.
var ErrNoBatch = errors.New("ledger: no such batch")

// MetaSwapper is an optional Store extension for stores shared by several
// processes: SwapMeta writes value under key only if the key still holds
// old (nil: the key is absent), and reports whether it wrote. The ledger
// uses it for read-modify-write of shared values (the model registry).
type MetaSwapper interface {
	SwapMeta(ctx context.Context, key string, old, value []byte) (bool, error)
}
