package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/wal"
)

// WALStore is the embedded Store with a write-ahead log in front of the
// bbolt file: an Append is acknowledged once its frame is fdatasync'd to
// the log (one sync per commit group), and an applier copies acknowledged
// records into bbolt afterwards, many per transaction. See the package
// doc for why; the invariants it keeps:
//
//   - bbolt's entries-bucket sequence is the last applied Seq, written in
//     the transaction that applies the records, so a restart replays
//     exactly the log frames past it (each record once).
//   - Duplicate checks stay exact: the committer (the only goroutine that
//     validates) checks bbolt in a read snapshot and, for what that
//     snapshot cannot show yet, the in-memory index of unapplied records;
//     it alone prunes that index, and only of records its own snapshot
//     already shows.
//   - Reads see every acknowledged record: Get answers an unapplied
//     receipt from the index, every other read of entries first waits for
//     the applier to reach the last acknowledged Seq. Batch writes wait the
//     same way, so AssignBatch never misses a pending receipt.
//   - The log is rewound (written again from offset 0) only when bbolt
//     holds everything in it, once it outgrows MaxLogBytes, and emptied at
//     Close; see walframe.go for how a replay finds its end.
type WALStore struct {
	b          *BoltStore
	log        *wal.Log // committer only (and Close, once it stopped)
	maxLog     int64
	applyDelay time.Duration

	appends chan *appendReq
	quit    chan struct{} // closed by Close: stop taking appends
	stopped chan struct{} // closed by the committer on exit
	applied chan struct{} // closed by the applier on exit
	closed  chan struct{} // closed when Close is done
	once    sync.Once

	// committer state
	lastSeq    uint64            // last Seq written to the log
	subjectSeq map[string]uint64 // last SubjectSeq handed out, per subject
	indexed    []*walRecord      // unapplied index entries, in Seq order, for pruning
	failed     error             // sticky: the log can no longer be trusted

	acked atomic.Uint64 // last acknowledged Seq

	mu         sync.Mutex
	byID       map[string]*walRecord // written to the log, maybe not yet in bbolt
	byRequest  map[string]bool
	queue      []*walRecord // acknowledged, waiting for the applier
	work       chan struct{}
	urgent     chan struct{} // a reader waits for the applier: apply now
	appliedSeq uint64
	applyErr   error
	advanced   chan struct{} // closed and replaced whenever appliedSeq moves
}

var (
	_ Store               = (*WALStore)(nil)
	_ Counter             = (*WALStore)(nil)
	_ MetaSwapper         = (*WALStore)(nil)
	_ OldestPendingReader = (*WALStore)(nil)
)

// ErrAppendTooLarge refuses an Append whose entries would not fit in one
// log frame.
var ErrAppendTooLarge = errors.New("ledger: append too large")

// walRecord is one entry written to the log: its JSON as stored in bbolt.
type walRecord struct {
	seq        uint64
	subjectSeq uint64
	id         string
	request    string
	subject    string
	void       bool
	worker     []byte
	json       []byte
}

// WALOptions tunes OpenWAL.
type WALOptions struct {
	// MaxLogBytes is the log size past which the committer waits for the
	// applier to catch up and rewinds the log (default 64 MiB).
	MaxLogBytes int64
	// ApplyDelay is how long the applier lets acknowledged records gather
	// before it writes them into bbolt, unless a read or batch write is
	// waiting for them (default 100ms). A bbolt transaction's page writes
	// and syncs stall the log's fdatasyncs behind them, the longer the
	// larger it is: at 2,000 req/s (tollgate bench overhead, receipts on)
	// added p99 was about 11 ms at 100ms against 17–23 ms at 500ms and
	// 130–160 ms at 5s; below 100ms the median grows. (That sweep ran with
	// random receipt and request IDs; time-ordered ones for both, ids.Ordered,
	// cut a transaction's page writes about 4.5-fold and the p99 to 4–9 ms.
	// Only receipt IDs are time ordered now: see ids.Request.)
	ApplyDelay time.Duration
}

// walSuffix names the log beside the bbolt file: receipts.db-wal.
const walSuffix = "-wal"

// OpenWAL opens (creating if needed) the ledger file at path and its log
// at path+"-wal". An existing bbolt ledger opens as it is; OpenBolt
// replays a log left by a crash before anything else reads the file.
func OpenWAL(path string, opts WALOptions) (*WALStore, error) {
	if opts.MaxLogBytes <= 0 {
		opts.MaxLogBytes = 64 << 20
	}
	if opts.ApplyDelay <= 0 {
		opts.ApplyDelay = 100 * time.Millisecond
	}
	b, err := OpenBolt(path) // replays and empties the log
	if err != nil {
		return nil, err
	}
	log, err := wal.OpenLog(path+walSuffix, opts.MaxLogBytes+wal.Chunk)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("ledger: %w", err)
	}
	var last uint64
	if err := b.db.View(func(tx *bolt.Tx) error { last = tx.Bucket(bucketEntries).Sequence(); return nil }); err != nil {
		log.Close()
		b.Close()
		return nil, err
	}
	s := &WALStore{
		b: b, log: log, maxLog: opts.MaxLogBytes,
		appends: make(chan *appendReq, maxGroup), quit: make(chan struct{}), stopped: make(chan struct{}),
		applied: make(chan struct{}), closed: make(chan struct{}),
		lastSeq: last, subjectSeq: map[string]uint64{},
		byID: map[string]*walRecord{}, byRequest: map[string]bool{},
		work: make(chan struct{}, 1), urgent: make(chan struct{}, 1), applyDelay: opts.ApplyDelay, appliedSeq: last, advanced: make(chan struct{}),
	}
	s.acked.Store(last)
	go func() {
		defer close(s.stopped)
		runGroupCommit(s.appends, s.quit, s.commit)
	}()
	go s.applyLoop()
	return s, nil
}

// Append queues entries for the committer and returns once their log
// frame is durable.
func (s *WALStore) Append(ctx context.Context, entries []*Entry) error {
	return enqueueAppend(ctx, s.appends, s.quit, s.closed, entries)
}

// commit validates a group, writes the accepted requests' frames with one
// write and one fdatasync, hands them to the applier and acknowledges.
func (s *WALStore) commit(group []*appendReq) {
	errs := make([]error, len(group))
	var frames []byte
	var recs []*walRecord
	last := s.lastSeq
	err := s.failed
	if err == nil {
		s.mu.Lock()
		err = s.applyErr // what bbolt cannot take must not be acknowledged either
		s.mu.Unlock()
	}
	if err == nil {
		err = s.b.db.View(func(tx *bolt.Tx) error {
			s.prune(tx.Bucket(bucketEntries).Sequence())
			ib, rb, sb := tx.Bucket(bucketIDs), tx.Bucket(bucketRequests), tx.Bucket(bucketSubjects)
			taken, takenReq := map[string]bool{}, map[string]bool{}
			for gi, r := range group {
				mine, mineReq := make(map[string]bool, len(r.entries)), make(map[string]bool, len(r.entries))
				for _, e := range r.entries {
					if taken[e.ID] || mine[e.ID] || s.byID[e.ID] != nil || ib.Get([]byte(e.ID)) != nil {
						errs[gi] = fmt.Errorf("%w: %s", ErrDuplicate, e.ID)
						break
					}
					if rq := requestID(e); rq != "" && (takenReq[rq] || mineReq[rq] || s.byRequest[rq] || rb.Get([]byte(rq)) != nil) {
						errs[gi] = fmt.Errorf("%w: request %s (receipt %s)", ErrDuplicateRequest, rq, e.ID)
						break
					}
					mine[e.ID], mineReq[requestID(e)] = true, true
				}
				if errs[gi] != nil || len(r.entries) == 0 {
					continue
				}
				payload := []byte{'['}
				first, nrecs := last+1, len(recs)
				before := map[string]uint64{} // subject seqs to restore if the frame is refused
				for i, e := range r.entries {
					taken[e.ID], takenReq[requestID(e)] = true, true
					last++
					e.Seq, e.SubjectSeq = last, 0
					if sub := e.Subject(); sub != "" {
						n, ok := s.subjectSeq[sub]
						if !ok {
							if b := sb.Bucket([]byte(sub)); b != nil {
								n = b.Sequence()
							}
						}
						if _, saved := before[sub]; !saved {
							before[sub] = n
						}
						n++
						s.subjectSeq[sub], e.SubjectSeq = n, n
					}
					v, err := json.Marshal(e)
					if err != nil {
						return err
					}
					if i > 0 {
						payload = append(payload, ',')
					}
					payload = append(payload, v...)
					recs = append(recs, recordOf(e, v))
				}
				if len(payload)+1 > maxFramePayload { // a replay could not read it back
					for sub, n := range before {
						s.subjectSeq[sub] = n
					}
					for _, e := range r.entries {
						delete(taken, e.ID)
						delete(takenReq, requestID(e))
						e.Seq, e.SubjectSeq = 0, 0
					}
					last, recs = first-1, recs[:nrecs]
					errs[gi] = fmt.Errorf("%w: %d bytes in one append, at most %d", ErrAppendTooLarge, len(payload)+1, maxFramePayload)
					continue
				}
				frames = appendFrame(frames, frame{seq: first, count: uint32(len(r.entries)), group: s.lastSeq + 1, payload: append(payload, ']')})
			}
			return nil
		})
	}
	if err == nil && len(frames) > 0 {
		err = s.writeLog(frames)
	}
	if err != nil {
		for _, r := range group {
			r.done <- err
		}
		return
	}
	if len(recs) > 0 {
		s.mu.Lock()
		for _, r := range recs {
			s.byID[r.id] = r
			if r.request != "" {
				s.byRequest[r.request] = true
			}
		}
		s.queue = append(s.queue, recs...)
		s.mu.Unlock()
		s.indexed = append(s.indexed, recs...)
		s.lastSeq = last
		s.acked.Store(last)
		select {
		case s.work <- struct{}{}:
		default:
		}
	}
	for gi, r := range group {
		r.done <- errs[gi]
	}
	if s.log.Written() >= s.maxLog {
		s.checkpoint(context.Background())
	}
}

// writeLog writes frames at the log's write position and syncs them. A
// failed write or sync makes the store refuse further appends: after a
// failed fsync the file's contents are unknown (the frames may reappear on
// replay, which is why the group is not acknowledged as stored either way).
func (s *WALStore) writeLog(frames []byte) error {
	if err := s.log.Write(frames); err != nil {
		s.failed = fmt.Errorf("ledger: %w", err)
		return s.failed
	}
	return nil
}

// prune drops from the unapplied index the records that bbolt
// already holds in the committer's snapshot (applied <= appliedInView):
// every later snapshot shows them too. Committer only; it takes s.mu for
// the readers' sake.
func (s *WALStore) prune(appliedInView uint64) {
	n := 0
	for n < len(s.indexed) && s.indexed[n].seq <= appliedInView {
		n++
	}
	if n == 0 {
		return
	}
	s.mu.Lock()
	for _, r := range s.indexed[:n] {
		delete(s.byID, r.id)
		if r.request != "" {
			delete(s.byRequest, r.request)
		}
	}
	s.mu.Unlock()
	s.indexed = append(s.indexed[:0:0], s.indexed[n:]...)
}

// checkpoint waits for bbolt to hold everything logged (the applier's
// transactions are fsync'd), then rewinds the log: the next frames
// overwrite the old ones from offset 0, and a replay stops at the first
// old frame (its seq is behind).
func (s *WALStore) checkpoint(ctx context.Context) {
	if err := s.waitApplied(ctx, s.lastSeq); err != nil {
		return
	}
	s.log.Rewind()
}

// emptyLog truncates the log to nothing and syncs that (Close, once bbolt
// holds all of it: the next open has nothing to scan).
func (s *WALStore) emptyLog() {
	if err := s.log.Empty(); err != nil {
		s.failed = fmt.Errorf("ledger: %w", err)
	}
}

func recordOf(e *Entry, v []byte) *walRecord {
	return &walRecord{seq: e.Seq, subjectSeq: e.SubjectSeq, id: e.ID, request: requestID(e), subject: e.Subject(),
		void: e.Void != nil, worker: workerOf(e), json: v}
}

// applyLoop copies acknowledged records into bbolt, everything queued per
// transaction, until Close has stopped the committer and the queue is
// empty.
func (s *WALStore) applyLoop() {
	defer close(s.applied)
	for {
		select {
		case <-s.work:
		case <-s.stopped:
			select {
			case <-s.work:
			default:
				s.mu.Lock()
				empty := len(s.queue) == 0
				s.mu.Unlock()
				if empty {
					return
				}
			}
		}
		s.gather()
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		err := s.b.db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, batch) })
		s.mu.Lock()
		if err != nil {
			s.applyErr = fmt.Errorf("ledger: applying logged receipts: %w", err)
		} else {
			s.appliedSeq = batch[len(batch)-1].seq
		}
		close(s.advanced)
		s.advanced = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// gather waits up to the apply delay for more records, less if a reader
// waits or Close has begun.
func (s *WALStore) gather() {
	t := time.NewTimer(s.applyDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.urgent:
	case <-s.stopped:
	}
}

// appendFill is the fill percent of the buckets applyRecords appends to.
const appendFill = 0.9

// applyRecords writes logged records into bbolt with their indexes, and
// moves the entries bucket's sequence (the applied mark) to the last one.
// Records at or below the mark are already there and are skipped.
func applyRecords(tx *bolt.Tx, recs []*walRecord) error {
	eb, ib, pb, rb, subs := tx.Bucket(bucketEntries), tx.Bucket(bucketIDs), tx.Bucket(bucketPending), tx.Bucket(bucketRequests), tx.Bucket(bucketSubjects)
	// These keys only grow (seqs, time-ordered receipt IDs), so their
	// pages fill at the right edge: split them nearly full instead of at
	// bbolt's default half, or every page written stays half empty.
	eb.FillPercent, ib.FillPercent, pb.FillPercent = appendFill, appendFill, appendFill
	mark := eb.Sequence()
	for _, r := range recs {
		if r.seq <= mark {
			continue
		}
		if r.seq != mark+1 {
			return fmt.Errorf("%w: receipt %s has seq %d after %d", ErrCorruptLog, r.id, r.seq, mark)
		}
		mark = r.seq
		k := key(r.seq)
		if err := errors.Join(eb.Put(k, r.json), ib.Put([]byte(r.id), k)); err != nil {
			return err
		}
		if r.subject != "" {
			sb, err := subs.CreateBucketIfNotExists([]byte(r.subject))
			if err != nil {
				return fmt.Errorf("ledger: subject index: %w", err)
			}
			sb.FillPercent = appendFill
			if err := sb.Put(key(r.subjectSeq), k); err != nil {
				return err
			}
			if sb.Sequence() < r.subjectSeq {
				if err := sb.SetSequence(r.subjectSeq); err != nil {
					return err
				}
			}
		}
		if r.void {
			if err := addVoid(tx); err != nil {
				return err
			}
			continue
		}
		wb, err := tx.Bucket(bucketPendingW).CreateBucketIfNotExists(r.worker)
		if err != nil {
			return err
		}
		wb.FillPercent = appendFill
		if err := errors.Join(pb.Put(k, nil), wb.Put(k, nil)); err != nil {
			return err
		}
		if r.request != "" {
			if err := rb.Put([]byte(r.request), k); err != nil {
				return err
			}
		}
	}
	return eb.SetSequence(mark)
}

// replayLog applies, in one transaction, the frames of the log at path
// that bbolt does not hold yet, then empties the log. A torn final frame
// is dropped (it was never acknowledged); a corrupt frame with intact ones
// after it fails the open. No log, or an empty one, is a no-op.
func replayLog(db *bolt.DB, path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ledger log: %w", err)
	}
	var applied uint64
	if err := db.View(func(tx *bolt.Tx) error { applied = tx.Bucket(bucketEntries).Sequence(); return nil }); err != nil {
		return err
	}
	frames, _, err := scanFrames(data, applied+1)
	if err != nil {
		return fmt.Errorf("%s: %w (refusing to open: it may hold acknowledged receipts)", path, err)
	}
	var recs []*walRecord
	for i, f := range frames {
		if f.seq+uint64(f.count) <= applied+1 {
			continue
		}
		var es []*Entry
		if err := json.Unmarshal(f.payload, &es); err != nil {
			return fmt.Errorf("%s: %w: frame %d: %v", path, ErrCorruptLog, i, err)
		}
		for _, e := range es {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			recs = append(recs, recordOf(e, v))
		}
	}
	if err := db.Update(func(tx *bolt.Tx) error { return applyRecords(tx, recs) }); err != nil {
		return fmt.Errorf("%s: replay: %w", path, err)
	}
	return wal.Truncate(path)
}

// waitApplied returns once bbolt holds every record up to seq.
func (s *WALStore) waitApplied(ctx context.Context, seq uint64) error {
	for {
		s.mu.Lock()
		done, err, ch := s.appliedSeq >= seq, s.applyErr, s.advanced
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case s.urgent <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-s.applied:
			s.mu.Lock()
			done, err = s.appliedSeq >= seq, s.applyErr
			s.mu.Unlock()
			if err == nil && !done {
				err = errClosed
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// caughtUp waits until bbolt holds every record acknowledged so far: what
// a read of entries (and a batch write) needs to see.
func (s *WALStore) caughtUp(ctx context.Context) error {
	return s.waitApplied(ctx, s.acked.Load())
}

// Get answers a receipt not yet applied from the log's index (the client
// fetching the receipt its response just named), else from bbolt.
func (s *WALStore) Get(ctx context.Context, id string) (*Entry, *Batch, error) {
	s.mu.Lock()
	r := s.byID[id]
	unapplied := r != nil && r.seq > s.appliedSeq
	s.mu.Unlock()
	if unapplied { // not in bbolt yet: pending, untouched by any batch write
		var e Entry
		if err := json.NewDecoder(bytes.NewReader(r.json)).Decode(&e); err != nil {
			return nil, nil, fmt.Errorf("ledger: entry %d: %w", r.seq, err)
		}
		return &e, nil, nil
	}
	return s.b.Get(ctx, id)
}

func (s *WALStore) List(ctx context.Context, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, nil, err
	}
	return s.b.List(ctx, after, limit)
}

func (s *WALStore) ListSubject(ctx context.Context, subject string, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, nil, err
	}
	return s.b.ListSubject(ctx, subject, after, limit)
}

func (s *WALStore) Entries(ctx context.Context, ids []string) ([]*Entry, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.Entries(ctx, ids)
}

func (s *WALStore) Pending(ctx context.Context) ([]*Entry, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.Pending(ctx)
}

func (s *WALStore) PendingWorkers(ctx context.Context) ([]string, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.PendingWorkers(ctx)
}

func (s *WALStore) PendingFor(ctx context.Context, workerID string, limit int) ([]*Entry, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.PendingFor(ctx, workerID, limit)
}

func (s *WALStore) OldestPending(ctx context.Context) (*Entry, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.OldestPending(ctx)
}

func (s *WALStore) Counts(ctx context.Context) (Counts, error) {
	if err := s.caughtUp(ctx); err != nil {
		return Counts{}, err
	}
	return s.b.Counts(ctx)
}

// AssignBatch, RecutBatch and ReviveBatch change entries: they wait for
// the applier first, so the pending pool they check holds every
// acknowledged receipt.
func (s *WALStore) AssignBatch(ctx context.Context, b *Batch) error {
	if err := s.caughtUp(ctx); err != nil {
		return err
	}
	return s.b.AssignBatch(ctx, b)
}

func (s *WALStore) RecutBatch(ctx context.Context, b *Batch, reason string, failed map[string]string) error {
	if err := s.caughtUp(ctx); err != nil {
		return err
	}
	return s.b.RecutBatch(ctx, b, reason, failed)
}

func (s *WALStore) ReviveBatch(ctx context.Context, seq uint64) (*Batch, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	return s.b.ReviveBatch(ctx, seq)
}

// Batches and meta values never sit in the log: straight to bbolt.

func (s *WALStore) OpenBatches(ctx context.Context) ([]*Batch, error) { return s.b.OpenBatches(ctx) }
func (s *WALStore) FinishBatch(ctx context.Context, b *Batch) error   { return s.b.FinishBatch(ctx, b) }
func (s *WALStore) UpdateBatch(ctx context.Context, b *Batch) error   { return s.b.UpdateBatch(ctx, b) }
func (s *WALStore) GetBatch(ctx context.Context, seq uint64) (*Batch, error) {
	return s.b.GetBatch(ctx, seq)
}
func (s *WALStore) Meta(ctx context.Context, k string) ([]byte, error) { return s.b.Meta(ctx, k) }
func (s *WALStore) PutMeta(ctx context.Context, k string, v []byte) error {
	return s.b.PutMeta(ctx, k, v)
}
func (s *WALStore) SwapMeta(ctx context.Context, k string, old, v []byte) (bool, error) {
	return s.b.SwapMeta(ctx, k, old, v)
}

// Close stops taking appends (queued ones fail with errClosed), lets the
// applier finish, empties the log once bbolt holds all of it, and closes
// both files. Safe to call more than once.
func (s *WALStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		<-s.stopped
		failQueued(s.appends)
		<-s.applied
		s.mu.Lock()
		applyErr := s.applyErr
		s.mu.Unlock()
		if applyErr == nil && s.failed == nil && s.log.Size() > 0 {
			if s.checkpoint(context.Background()); s.log.Written() == 0 {
				s.emptyLog()
			}
		}
		err = errors.Join(applyErr, s.log.Close(), s.b.Close())
		close(s.closed)
	})
	return err
}
