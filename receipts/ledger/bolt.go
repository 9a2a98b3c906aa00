package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/receipts"
)

var (
	bucketEntries = []byte("entries") // seq → Entry JSON
	bucketIDs     = []byte("ids")     // receipt ID → seq
	bucketPending = []byte("pending") // seq → empty
	bucketBatches = []byte("batches") // batch seq → Batch JSON
	bucketOpen    = []byte("open")    // batch seq → empty, while unfinished
	bucketMeta    = []byte("meta")
	// bucketSubjects holds one nested bucket per subject (API key ID):
	// subject seq → entry seq, the index of a client's own export.
	bucketSubjects = []byte("subjects")
	// bucketRequests indexes request IDs (request ID → entry seq), so a
	// request is recorded at most once whatever receipt ID it comes with.
	bucketRequests = []byte("requests")
	// bucketPendingW holds one nested bucket per worker ID (entry seq →
	// empty): the pending pool by worker, so the prover reads only what it
	// cuts. Kept in step with bucketPending by every write.
	bucketPendingW = []byte("pending_by_worker")
)

// metaSubjectsIndexed marks a ledger whose every entry is in
// bucketSubjects (set by initSubjects once it has indexed the entries of
// a ledger written before the index existed).
var metaSubjectsIndexed = []byte("subjects/indexed")

// BoltStore is the embedded Store: one bbolt file, every write transaction
// fsync'd; concurrent appends share one transaction (group commit, see
// Append).
type BoltStore struct {
	db      *bolt.DB
	appends chan *appendReq
	quit    chan struct{} // closed by Close: stop taking appends
	stopped chan struct{} // closed by the committer on exit
	closed  chan struct{} // closed when Close is done
	once    sync.Once
}

var _ Store = (*BoltStore)(nil)

// OpenBolt opens (creating if needed) the ledger file at path. bbolt locks
// the file: one process at a time.
func OpenBolt(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketIDs, bucketPending, bucketBatches, bucketOpen, bucketMeta, bucketSubjects} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return errors.Join(initCounts(tx), initSubjects(tx), initIndexes(tx))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init ledger %s: %w", path, err)
	}
	// Whoever opens the file first applies what a WALStore that crashed
	// left in its log, so no opener sees (or extends) a ledger missing
	// acknowledged receipts.
	if err := replayLog(db, path+walSuffix); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	s := &BoltStore{db: db, appends: make(chan *appendReq, maxGroup), quit: make(chan struct{}), stopped: make(chan struct{}), closed: make(chan struct{})}
	go s.commitLoop()
	return s, nil
}

func key(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func seqOf(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

// ErrDuplicate is returned when a receipt ID is recorded twice.
var ErrDuplicate = errors.New("receipt ID already recorded")

// ErrDuplicateRequest is returned when a request ID is recorded again
// under another receipt ID: one served request is billed once. It wraps
// ErrDuplicate, so a spool flushing it drops it as already recorded.
var ErrDuplicateRequest = fmt.Errorf("%w: request ID already recorded under another receipt", ErrDuplicate)

// ErrNotPending is returned by AssignBatch when a receipt is already in a
// batch (another prover closed it first).
var ErrNotPending = errors.New("ledger: receipt is not pending")

// Append queues entries for the committer and returns once they are
// durable. Concurrent appends are group-committed: while one transaction is
// being fsync'd, the next group gathers, so an idle ledger adds no wait and
// a busy one shares each fsync among many receipts.
func (s *BoltStore) Append(ctx context.Context, entries []*Entry) error {
	return enqueueAppend(ctx, s.appends, s.quit, s.closed, entries)
}

func (s *BoltStore) commitLoop() {
	defer close(s.stopped)
	runGroupCommit(s.appends, s.quit, s.commit)
}

// commit writes a group in one fsync'd transaction. A request whose receipt
// ID or request ID is already taken fails alone; a failed transaction fails
// them all.
func (s *BoltStore) commit(group []*appendReq) {
	errs := make([]error, len(group))
	err := s.db.Update(func(tx *bolt.Tx) error {
		eb, ib, pb, rb := tx.Bucket(bucketEntries), tx.Bucket(bucketIDs), tx.Bucket(bucketPending), tx.Bucket(bucketRequests)
		taken, takenReq := map[string]bool{}, map[string]bool{}
		for gi, r := range group {
			// An ID is refused if stored, taken earlier in this group, or
			// named twice within this very request; so is a request ID.
			mine, mineReq := make(map[string]bool, len(r.entries)), make(map[string]bool, len(r.entries))
			for _, e := range r.entries {
				if taken[e.ID] || mine[e.ID] || ib.Get([]byte(e.ID)) != nil {
					errs[gi] = fmt.Errorf("%w: %s", ErrDuplicate, e.ID)
					break
				}
				if rq := requestID(e); rq != "" && (takenReq[rq] || mineReq[rq] || rb.Get([]byte(rq)) != nil) {
					errs[gi] = fmt.Errorf("%w: request %s (receipt %s)", ErrDuplicateRequest, rq, e.ID)
					break
				}
				mine[e.ID], mineReq[requestID(e)] = true, true
			}
			if errs[gi] != nil {
				continue
			}
			for _, e := range r.entries {
				taken[e.ID], takenReq[requestID(e)] = true, true
				seq, err := eb.NextSequence()
				if err != nil {
					return err
				}
				e.Seq = seq
				if err := indexSubject(tx, e); err != nil {
					return err
				}
				v, err := json.Marshal(e)
				if err != nil {
					return err
				}
				if err := errors.Join(eb.Put(key(seq), v), ib.Put([]byte(e.ID), key(seq))); err != nil {
					return err
				}
				if e.Void != nil {
					if err := addVoid(tx); err != nil {
						return err
					}
					continue // nothing to prove
				}
				if err := errors.Join(pb.Put(key(seq), nil), putPendingW(tx, e)); err != nil {
					return err
				}
				if rq := requestID(e); rq != "" {
					if err := rb.Put([]byte(rq), key(seq)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	for gi, r := range group {
		if err != nil {
			r.done <- err
		} else {
			r.done <- errs[gi]
		}
	}
}

func getEntry(tx *bolt.Tx, seq uint64) (*Entry, error) {
	v := tx.Bucket(bucketEntries).Get(key(seq))
	if v == nil {
		return nil, fmt.Errorf("ledger: entry %d missing", seq)
	}
	var e Entry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("ledger: entry %d: %w", seq, err)
	}
	return &e, nil
}

func getBatch(tx *bolt.Tx, seq uint64) (*Batch, error) {
	v := tx.Bucket(bucketBatches).Get(key(seq))
	if v == nil {
		return nil, fmt.Errorf("ledger: batch %d missing", seq)
	}
	var b Batch
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("ledger: batch %d: %w", seq, err)
	}
	return &b, nil
}

func (s *BoltStore) Get(ctx context.Context, id string) (*Entry, *Batch, error) {
	var e *Entry
	var b *Batch
	err := s.db.View(func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketIDs).Get([]byte(id))
		if k == nil {
			return apierr.NotFound("id", "receipt_not_found", "no receipt %q", id)
		}
		var err error
		if e, err = getEntry(tx, seqOf(k)); err != nil {
			return err
		}
		if e.BatchSeq != 0 {
			b, err = getBatch(tx, e.BatchSeq)
		}
		return err
	})
	return e, b, err
}

func (s *BoltStore) List(ctx context.Context, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	var out []*Entry
	batches := map[uint64]*Batch{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(key(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("ledger: entry %d: %w", seqOf(k), err)
			}
			out = append(out, &e)
			if e.BatchSeq != 0 && batches[e.BatchSeq] == nil {
				b, err := getBatch(tx, e.BatchSeq)
				if err != nil {
					return err
				}
				batches[e.BatchSeq] = b
			}
		}
		return nil
	})
	return out, batches, err
}

// ListSubject reads the subject's index bucket from after+1.
func (s *BoltStore) ListSubject(ctx context.Context, subject string, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	var out []*Entry
	batches := map[uint64]*Batch{}
	err := s.db.View(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSubjects).Bucket([]byte(subject))
		if sb == nil || subject == "" {
			return nil
		}
		c := sb.Cursor()
		for k, v := c.Seek(key(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			e, err := getEntry(tx, seqOf(v))
			if err != nil {
				return err
			}
			out = append(out, e)
			if e.BatchSeq != 0 && batches[e.BatchSeq] == nil {
				b, err := getBatch(tx, e.BatchSeq)
				if err != nil {
					return err
				}
				batches[e.BatchSeq] = b
			}
		}
		return nil
	})
	return out, batches, err
}

// indexSubject gives e its SubjectSeq and adds it to its subject's index
// (no-op without a subject).
func indexSubject(tx *bolt.Tx, e *Entry) error {
	sub := e.Subject()
	if sub == "" {
		return nil
	}
	sb, err := tx.Bucket(bucketSubjects).CreateBucketIfNotExists([]byte(sub))
	if err != nil {
		return fmt.Errorf("ledger: subject index: %w", err)
	}
	n, err := sb.NextSequence()
	if err != nil {
		return err
	}
	e.SubjectSeq = n
	return sb.Put(key(n), key(e.Seq))
}

// initSubjects indexes, once, the entries of a ledger written before the
// per-subject index existed (rewriting each with its SubjectSeq).
func initSubjects(tx *bolt.Tx) error {
	mb := tx.Bucket(bucketMeta)
	if mb.Get(metaSubjectsIndexed) != nil {
		return nil
	}
	eb := tx.Bucket(bucketEntries)
	type rewrite struct {
		k []byte
		e *Entry
	}
	var todo []rewrite
	err := eb.ForEach(func(k, v []byte) error {
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("entry %d: %w", seqOf(k), err)
		}
		if e.SubjectSeq == 0 && e.Subject() != "" {
			todo = append(todo, rewrite{append([]byte(nil), k...), &e})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range todo { // bbolt forbids writes inside ForEach
		if err := indexSubject(tx, r.e); err != nil {
			return err
		}
		v, err := json.Marshal(r.e)
		if err != nil {
			return err
		}
		if err := eb.Put(r.k, v); err != nil {
			return err
		}
	}
	return mb.Put(metaSubjectsIndexed, []byte{1})
}

// Entries returns entries by receipt ID, in the order asked.
func (s *BoltStore) Entries(ctx context.Context, ids []string) ([]*Entry, error) {
	out := make([]*Entry, len(ids))
	err := s.db.View(func(tx *bolt.Tx) error {
		for i, id := range ids {
			k := tx.Bucket(bucketIDs).Get([]byte(id))
			if k == nil {
				return fmt.Errorf("ledger: receipt %s missing", id)
			}
			var err error
			if out[i], err = getEntry(tx, seqOf(k)); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) Pending(ctx context.Context) ([]*Entry, error) {
	var out []*Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPending).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			e, err := getEntry(tx, seqOf(k))
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) AssignBatch(ctx context.Context, b *Batch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		bb, pb, ib := tx.Bucket(bucketBatches), tx.Bucket(bucketPending), tx.Bucket(bucketIDs)
		seqs := make([]uint64, len(b.Receipts))
		for i, id := range b.Receipts {
			k := ib.Get([]byte(id))
			if k == nil || pb.Get(k) == nil {
				return fmt.Errorf("%w: receipt %s", ErrNotPending, id)
			}
			seqs[i] = seqOf(k)
		}
		seq, err := bb.NextSequence()
		if err != nil {
			return err
		}
		b.Seq = seq
		b.Status = receipts.StatusPending
		for i, rs := range seqs {
			e, err := getEntry(tx, rs)
			if err != nil {
				return err
			}
			e.BatchSeq, e.Index, e.PendingReason = seq, i, ""
			if err := errors.Join(putEntry(tx, e), pb.Delete(key(rs)), deletePendingW(tx, e)); err != nil {
				return err
			}
		}
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		return errors.Join(bb.Put(key(seq), v), tx.Bucket(bucketOpen).Put(key(seq), nil))
	})
}

func putEntry(tx *bolt.Tx, e *Entry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketEntries).Put(key(e.Seq), v)
}

func requestID(e *Entry) string {
	if e.Completion == nil {
		return ""
	}
	return e.Completion.RequestID
}

func workerOf(e *Entry) []byte {
	if e.Completion == nil || e.Completion.WorkerID == "" {
		return []byte("-")
	}
	return []byte(e.Completion.WorkerID)
}

// putPendingW adds a pending entry to its worker's pool.
func putPendingW(tx *bolt.Tx, e *Entry) error {
	wb, err := tx.Bucket(bucketPendingW).CreateBucketIfNotExists(workerOf(e))
	if err != nil {
		return err
	}
	return wb.Put(key(e.Seq), nil)
}

// deletePendingW takes an entry out of its worker's pool, dropping the
// worker's bucket once it is empty.
func deletePendingW(tx *bolt.Tx, e *Entry) error {
	pw := tx.Bucket(bucketPendingW)
	wb := pw.Bucket(workerOf(e))
	if wb == nil {
		return nil
	}
	if err := wb.Delete(key(e.Seq)); err != nil {
		return err
	}
	if k, _ := wb.Cursor().First(); k == nil {
		return pw.DeleteBucket(workerOf(e))
	}
	return nil
}

// initIndexes builds the request-ID and per-worker pending indexes of a
// ledger written before they existed; a no-op once they exist.
func initIndexes(tx *bolt.Tx) error {
	if tx.Bucket(bucketRequests) == nil {
		rb, err := tx.CreateBucket(bucketRequests)
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %d: %w", seqOf(k), err)
			}
			if rq := requestID(&e); rq != "" && rb.Get([]byte(rq)) == nil {
				return rb.Put([]byte(rq), k)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if tx.Bucket(bucketPendingW) == nil {
		if _, err := tx.CreateBucket(bucketPendingW); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
			e, err := getEntry(tx, seqOf(k))
			if err != nil {
				return err
			}
			return putPendingW(tx, e)
		})
	}
	return nil
}

func (s *BoltStore) PendingWorkers(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPendingW).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

func (s *BoltStore) PendingFor(ctx context.Context, workerID string, limit int) ([]*Entry, error) {
	var out []*Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		wb := tx.Bucket(bucketPendingW).Bucket([]byte(workerID))
		if wb == nil {
			return nil
		}
		c := wb.Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			e, err := getEntry(tx, seqOf(k))
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) UpdateBatch(ctx context.Context, b *Batch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketOpen).Get(key(b.Seq)) == nil {
			return nil
		}
		stored, err := getBatch(tx, b.Seq)
		if err != nil {
			return err
		}
		stored.OfferedAt, stored.Attempts, stored.PendingReason = b.OfferedAt, b.Attempts, b.PendingReason
		return putBatch(tx, stored)
	})
}

func putBatch(tx *bolt.Tx, b *Batch) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketBatches).Put(key(b.Seq), v)
}

func (s *BoltStore) RecutBatch(ctx context.Context, b *Batch, reason string, failed map[string]string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ob, pb := tx.Bucket(bucketOpen), tx.Bucket(bucketPending)
		if ob.Get(key(b.Seq)) == nil {
			return fmt.Errorf("%w: batch %d", ErrNotOpen, b.Seq)
		}
		stored, err := getBatch(tx, b.Seq)
		if err != nil {
			return err
		}
		nfailed := 0
		for _, id := range stored.Receipts {
			k := tx.Bucket(bucketIDs).Get([]byte(id))
			if k == nil {
				return fmt.Errorf("ledger: receipt %s of batch %d missing", id, b.Seq)
			}
			e, err := getEntry(tx, seqOf(k))
			if err != nil {
				return err
			}
			e.BatchSeq, e.Index = 0, 0
			if why, ok := failed[id]; ok {
				e.Failure, e.PendingReason = why, ""
				nfailed++
				if err := putEntry(tx, e); err != nil {
					return err
				}
				continue
			}
			e.PendingReason = reason
			if err := errors.Join(putEntry(tx, e), pb.Put(k, nil), putPendingW(tx, e)); err != nil {
				return err
			}
		}
		stored.Status, stored.Error = StatusRecut, reason
		return errors.Join(putBatch(tx, stored), ob.Delete(key(b.Seq)), addCount(tx, metaFailed, nfailed))
	})
}

func (s *BoltStore) GetBatch(ctx context.Context, seq uint64) (*Batch, error) {
	var b *Batch
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketBatches).Get(key(seq)) == nil {
			return fmt.Errorf("%w: %d", ErrNoBatch, seq)
		}
		var err error
		b, err = getBatch(tx, seq)
		return err
	})
	return b, err
}

func (s *BoltStore) ReviveBatch(ctx context.Context, seq uint64) (*Batch, error) {
	var out *Batch
	err := s.db.Update(func(tx *bolt.Tx) error {
		ib, pb := tx.Bucket(bucketIDs), tx.Bucket(bucketPending)
		if tx.Bucket(bucketBatches).Get(key(seq)) == nil {
			return fmt.Errorf("%w: %d", ErrNoBatch, seq)
		}
		stored, err := getBatch(tx, seq)
		if err != nil {
			return err
		}
		if stored.Status != StatusRecut {
			return fmt.Errorf("%w: batch %d is %s, not re-cut", ErrNotOpen, seq, stored.Status)
		}
		seqs := make([]uint64, len(stored.Receipts))
		for i, id := range stored.Receipts {
			k := ib.Get([]byte(id))
			if k == nil || pb.Get(k) == nil {
				return fmt.Errorf("%w: receipt %s", ErrNotPending, id)
			}
			seqs[i] = seqOf(k)
		}
		for i, rs := range seqs {
			e, err := getEntry(tx, rs)
			if err != nil {
				return err
			}
			e.BatchSeq, e.Index, e.PendingReason = seq, i, ""
			if err := errors.Join(putEntry(tx, e), pb.Delete(key(rs)), deletePendingW(tx, e)); err != nil {
				return err
			}
		}
		stored.Status, stored.Error = receipts.StatusPending, ""
		stored.OfferedAt, stored.Attempts, stored.PendingReason = time.Time{}, 0, ""
		out = stored
		return errors.Join(putBatch(tx, stored), tx.Bucket(bucketOpen).Put(key(seq), nil))
	})
	return out, err
}

func (s *BoltStore) OpenBatches(ctx context.Context) ([]*Batch, error) {
	var out []*Batch
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOpen).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			b, err := getBatch(tx, seqOf(k))
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) FinishBatch(ctx context.Context, b *Batch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOpen)
		if ob.Get(key(b.Seq)) == nil {
			return nil // already finished: proofs are stored once
		}
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		return errors.Join(tx.Bucket(bucketBatches).Put(key(b.Seq), v), ob.Delete(key(b.Seq)), addFinished(tx, b))
	})
}

func (s *BoltStore) Meta(ctx context.Context, k string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte(k)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) PutMeta(ctx context.Context, k string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte(k), v) })
}

// SwapMeta writes v under k if k still holds old (nil: absent). bbolt
// locks the file to one process, but a swap keeps the Store contract the
// same for every implementation.
func (s *BoltStore) SwapMeta(ctx context.Context, k string, old, v []byte) (bool, error) {
	swapped := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		cur := b.Get([]byte(k))
		if (cur == nil) != (old == nil) || !bytes.Equal(cur, old) {
			return nil
		}
		swapped = true
		return b.Put([]byte(k), v)
	})
	return swapped && err == nil, err
}

// Close stops the committer (queued appends fail with errClosed) and closes
// the file. Safe to call more than once.
func (s *BoltStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		<-s.stopped
		failQueued(s.appends)
		err = s.db.Close()
		close(s.closed)
	})
	return err
}

// boltOptions are the ledger file's bbolt options. The freelist is not
// written on commit (NoFreelistSync, as etcd runs bbolt): an open rebuilds
// it from the pages, so every commit writes and syncs fewer pages, which
// would otherwise stall the write-ahead log's fdatasyncs behind them.
func boltOptions() *bolt.Options {
	return &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
}
