package workers

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/wal"
)

// recordsFile is the worker's record store in its DataDir, recordsLog the
// write-ahead log in front of it; legacyProduced is the JSON-lines file
// it replaces (imported once, then removed).
const (
	recordsFile    = "records.db"
	recordsLog     = recordsFile + "-wal"
	legacyProduced = "completions.jsonl"
)

// Defaults of the write-ahead log in front of the record store.
const (
	// defaultRecordLogBytes is the log size past which the committer
	// waits for the applier to catch up and rewinds the log.
	defaultRecordLogBytes = 64 << 20
	// defaultRecordApplyDelay is how long the applier lets acknowledged
	// records gather before it writes them into bbolt: a transaction's
	// writes and syncs stall the log's fdatasyncs behind them, the longer
	// the larger it is, and many small ones cost CPU (see
	// ledger.WALOptions.ApplyDelay for the measurement; the same here).
	defaultRecordApplyDelay = 100 * time.Millisecond
	// applyNow is how many records waiting for the applier make it apply
	// without waiting out the delay. The unapplied index is bounded by
	// the log (its rewind waits for the applier), or without a DataDir
	// by applyNow: the committer waits for the applier there.
	applyNow = 16 << 10
)

// Default bounds of the record store.
//
// Records are kept for RecordMaxAge (7 days) so that a backlog the prover
// has not countersigned yet, however large, stays signable for that long;
// RecordMaxBytes (4 GiB) bounds the disk it takes. A record costs about
// 500 bytes on disk (its JSON, the age index, and its share of the signed
// set), so 4 GiB holds about 8 million records: 7 days at 13 requests/s, or
// 11 hours at 200/s. Whichever bound is reached first ages the oldest
// records out; each one that goes unsigned is logged and counted
// (tollgate.worker.records{event="aged_out_unsigned"}), and a later
// countersign request for it is refused with code record_expired.
const (
	DefaultRecordMaxAge   = 7 * 24 * time.Hour
	DefaultRecordMaxBytes = 4 << 30
)

var (
	bucketProduced  = []byte("produced")   // request ID → 8-byte stored-at (Unix ns) + Completion JSON
	bucketAge       = []byte("age")        // stored-at + request ID → empty (oldest first)
	bucketSigned    = []byte("signed")     // request ID → batch key
	bucketSigBatch  = []byte("batches")    // batch key → SignedBatch JSON
	bucketSignedAge = []byte("signed_age") // signed-at + batch key → empty
	bucketRecMeta   = []byte("meta")
	metaBytes       = []byte("bytes")          // live bytes, 8-byte BE
	metaExpired     = []byte("expired_before") // newest stored-at aged out, Unix ns
	metaApplied     = []byte("applied_seq")    // last log seq bbolt holds, 8-byte BE
)

// sweepChunk bounds how many records one transaction ages out, so a
// large expiry never holds the writer for long.
const sweepChunk = 10_000

// recordStore is the worker's durable memory of what it produced and what
// it countersigned (one bbolt file in the DataDir):
//
//   - completion records, keyed by request ID, so it can check what it is
//     asked to countersign. add returns once the record's frame is
//     fdatasync'd to the write-ahead log beside the bbolt file (records.db-wal;
//     concurrent adds share one sync), so a record a gateway holds is never
//     lost to a worker crash. An applier writes acknowledged records into
//     bbolt later, many per transaction, and ages records out there.
//   - every batch it countersigned, keyed by each of its request IDs (see
//     SignOnce), so it never signs a leaf into two batches, across restarts.
//     These go straight to bbolt, one fsync'd transaction each.
//
// The log keeps the invariants of the gateway's receipt ledger
// (receipts/ledger.WALStore), with internal/wal's frames, one per record:
//
//   - the meta bucket's applied_seq is the last applied log seq, written
//     in the transaction that applies the records, so an open replays
//     exactly the frames past it (each record once);
//   - get sees every acknowledged record: one not applied yet is answered
//     from the in-memory index of unapplied records;
//   - the log is rewound (written again from offset 0) only once bbolt
//     holds everything in it, when it outgrows maxLogBytes, and emptied
//     at close.
//
// Records are bounded by age and the store by size (DefaultRecordMaxAge,
// DefaultRecordMaxBytes), not by a count smaller than a realistic backlog.
// bbolt reuses the pages freed by ageing out, so the file stays near its
// high-water mark. Without a DataDir the same store runs on an unlinked
// temporary file without a log or fsync: nothing survives the process.
type recordStore struct {
	db         *bolt.DB
	log        *wal.Log // nil without a DataDir; committer only (and close)
	maxLog     int64
	applyDelay time.Duration
	maxAge     time.Duration
	maxBytes   int64
	clock      clock.Clock
	logger     *slog.Logger
	metrics    *obs.Metrics

	expiredBefore atomic.Int64 // Unix ns; see expired

	adds    chan *addReq
	quit    chan struct{} // closed by close: stop taking adds
	stopped chan struct{} // closed by the committer on exit
	applied chan struct{} // closed by the applier on exit
	closed  atomic.Bool

	// committer state
	lastSeq uint64 // last seq written to the log
	failed  error  // sticky: the log can no longer be trusted

	acked atomic.Uint64 // last acknowledged seq

	mu         sync.Mutex
	unapplied  map[string]*loggedRecord // request ID → its newest record bbolt may not hold yet
	queue      []*loggedRecord          // acknowledged, waiting for the applier
	work       chan struct{}
	urgent     chan struct{} // someone waits for the applier: apply now
	appliedSeq uint64
	applyErr   error
	advanced   chan struct{} // closed and replaced whenever appliedSeq moves
}

// loggedRecord is one acknowledged add: its bbolt value (8-byte stored-at,
// then the Completion JSON), which is also its log frame's payload.
type loggedRecord struct {
	seq   uint64
	id    string
	value []byte
}

type recordOptions struct {
	dir         string
	maxLogBytes int64         // default defaultRecordLogBytes
	applyDelay  time.Duration // default defaultRecordApplyDelay
	maxAge      time.Duration
	maxBytes    int64
	clock       clock.Clock
	logger      *slog.Logger
	metrics     *obs.Metrics
}

type addReq struct {
	c    *task.Completion
	done chan error
}

var errRecordsClosed = errors.New("completion records: store closed")

func openRecordStore(o recordOptions) (*recordStore, error) {
	if o.maxAge <= 0 {
		o.maxAge = DefaultRecordMaxAge
	}
	if o.maxBytes <= 0 {
		o.maxBytes = DefaultRecordMaxBytes
	}
	if o.clock == nil {
		o.clock = clock.Real{}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.maxLogBytes <= 0 {
		o.maxLogBytes = defaultRecordLogBytes
	}
	if o.applyDelay <= 0 {
		o.applyDelay = defaultRecordApplyDelay
	}
	var (
		db  *bolt.DB
		err error
	)
	if o.dir == "" {
		db, err = openScratchBolt()
	} else {
		if err := os.MkdirAll(o.dir, 0o700); err != nil {
			return nil, fmt.Errorf("completion records: %w", err)
		}
		// No freelist on commit (rebuilt at open, as etcd runs bbolt): each
		// apply writes and syncs fewer pages, which would stall the log's
		// fdatasyncs behind them.
		db, err = bolt.Open(filepath.Join(o.dir, recordsFile), 0o600,
			&bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	}
	if err != nil {
		return nil, fmt.Errorf("completion records: %w", err)
	}
	s := &recordStore{db: db, maxLog: o.maxLogBytes, applyDelay: o.applyDelay, maxAge: o.maxAge, maxBytes: o.maxBytes,
		clock: o.clock, logger: o.logger, metrics: o.metrics,
		adds: make(chan *addReq, 1024), quit: make(chan struct{}), stopped: make(chan struct{}), applied: make(chan struct{}),
		unapplied: map[string]*loggedRecord{}, work: make(chan struct{}, 1), urgent: make(chan struct{}, 1), advanced: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketProduced, bucketAge, bucketSigned, bucketSigBatch, bucketSignedAge, bucketRecMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		s.expiredBefore.Store(int64(getU64(tx.Bucket(bucketRecMeta), metaExpired)))
		return nil
	})
	if err == nil && o.dir != "" {
		// The bbolt file is locked: no other worker writes this log.
		if err = s.replayLog(filepath.Join(o.dir, recordsLog)); err == nil {
			s.log, err = wal.OpenLog(filepath.Join(o.dir, recordsLog), o.maxLogBytes+wal.Chunk)
		}
	}
	if err == nil && o.dir != "" {
		err = s.importLegacy(filepath.Join(o.dir, legacyProduced))
	}
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			s.lastSeq = getU64(tx.Bucket(bucketRecMeta), metaApplied)
			return nil
		})
	}
	if err != nil {
		if s.log != nil {
			s.log.Close()
		}
		db.Close()
		return nil, fmt.Errorf("completion records: %w", err)
	}
	s.appliedSeq = s.lastSeq
	s.acked.Store(s.lastSeq)
	go s.commitLoop()
	go s.applyLoop()
	return s, nil
}

// replayLog applies, in one transaction, the records of the log at path
// that bbolt does not hold yet, then empties the log. A torn final frame
// is dropped (it was never acknowledged); a damaged frame with intact
// ones of a later group after it fails the open (wal.ErrCorrupt), the log
// left as it is. No log, or an empty one, is a no-op.
func (s *recordStore) replayLog(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(data) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read record log: %w", err)
	}
	var applied uint64
	if err := s.db.View(func(tx *bolt.Tx) error { applied = getU64(tx.Bucket(bucketRecMeta), metaApplied); return nil }); err != nil {
		return err
	}
	frames, _, err := wal.Scan(data, applied+1)
	if err != nil {
		return fmt.Errorf("%s: %w (refusing to open: it may hold acknowledged records)", path, err)
	}
	var recs []*loggedRecord
	for _, f := range frames {
		// Every frame holds one record, those bbolt holds too: a count
		// that lies moved where Scan ended the log.
		if f.Count != 1 {
			return fmt.Errorf("%s: %w: frame of seq %d: %d records", path, wal.ErrCorrupt, f.Seq, f.Count)
		}
		if f.Seq <= applied {
			continue
		}
		id, err := recordID(f.Payload)
		if err != nil {
			return fmt.Errorf("%s: %w: frame of seq %d: %v", path, wal.ErrCorrupt, f.Seq, err)
		}
		recs = append(recs, &loggedRecord{seq: f.Seq, id: id, value: f.Payload})
	}
	if len(recs) > 0 {
		if err := s.db.Update(func(tx *bolt.Tx) error { return applyRecordsLocked(tx, recs) }); err != nil {
			return fmt.Errorf("%s: replay: %w", path, err)
		}
		s.logger.Info("completion records replayed from the record log", "records", len(recs), "file", path)
	}
	return wal.Truncate(path)
}

// recordValue is a record's bbolt value and log payload: the 8-byte
// stored-at (Unix ns), then the Completion JSON.
func recordValue(at int64, c *task.Completion) ([]byte, error) {
	j, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(j)), uint64(at))
	return append(v, j...), nil
}

// recordID reads the request ID out of a record value.
func recordID(v []byte) (string, error) {
	if len(v) < 8 {
		return "", errors.New("short record")
	}
	var c struct {
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(v[8:], &c); err != nil {
		return "", err
	}
	if c.RequestID == "" {
		return "", errors.New("record without a request ID")
	}
	return c.RequestID, nil
}

// applyRecordsLocked writes logged records into bbolt (in a write
// transaction) and moves the applied mark to the last one. Records at or
// below the mark are already there and are skipped.
func applyRecordsLocked(tx *bolt.Tx, recs []*loggedRecord) error {
	mb := tx.Bucket(bucketRecMeta)
	mark := getU64(mb, metaApplied)
	for _, r := range recs {
		if r.seq <= mark {
			continue
		}
		if r.seq != mark+1 {
			return fmt.Errorf("%w: record %s has seq %d after %d", wal.ErrCorrupt, r.id, r.seq, mark)
		}
		mark = r.seq
		if err := putValueLocked(tx, []byte(r.id), r.value); err != nil {
			return err
		}
	}
	return putU64(mb, metaApplied, mark)
}

// openScratchBolt opens a bbolt file that is already unlinked: a store
// for an agent without a DataDir, gone with the process.
func openScratchBolt() (*bolt.DB, error) {
	f, err := os.CreateTemp("", "tollgate-records-*.db")
	if err != nil {
		return nil, err
	}
	path := f.Name()
	f.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	os.Remove(path)
	return db, err
}

// importLegacy moves the records of an older worker's completions.jsonl
// into the store (aged from their own time) and removes the file.
func (s *recordStore) importLegacy(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var cs []*task.Completion
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var c task.Completion
		if json.Unmarshal(sc.Bytes(), &c) != nil || c.RequestID == "" {
			continue // a torn last line after a crash
		}
		cs = append(cs, &c)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range cs {
			v, err := recordValue(c.Time.UnixNano(), c)
			if err != nil {
				return err
			}
			if err := putValueLocked(tx, []byte(c.RequestID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.logger.Info("completion records imported from the old record file", "records", len(cs), "file", path)
	return os.Remove(path)
}

// add stores c durably: it returns once c's log frame is fdatasync'd.
func (s *recordStore) add(c *task.Completion) error {
	if s.closed.Load() {
		return errRecordsClosed
	}
	r := &addReq{c: c, done: make(chan error, 1)}
	select {
	case s.adds <- r:
	case <-s.quit:
		return errRecordsClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-s.stopped: // queued as the store closed
		select {
		case err := <-r.done:
			return err
		default:
			return errRecordsClosed
		}
	}
}

// commitLoop logs everything queued at each moment with one write and one
// fdatasync: an idle store adds no wait, a busy one shares each sync.
func (s *recordStore) commitLoop() {
	defer close(s.stopped)
	for {
		var group []*addReq
		select {
		case r := <-s.adds:
			group = append(group, r)
		case <-s.quit:
			for {
				select {
				case r := <-s.adds:
					r.done <- errRecordsClosed
				default:
					return
				}
			}
		}
	gather:
		for len(group) < cap(s.adds) {
			select {
			case r := <-s.adds:
				group = append(group, r)
			default:
				break gather
			}
		}
		s.commit(group)
	}
}

// commit writes a group's frames, one per record, stamped with one
// stored-at, syncs them, hands the records to the applier and
// acknowledges. Without a log (no DataDir) the records go to the applier
// alone.
func (s *recordStore) commit(group []*addReq) {
	errs := make([]error, len(group))
	err := s.failed
	if err == nil {
		s.mu.Lock()
		err = s.applyErr // what bbolt cannot take must not be acknowledged either
		s.mu.Unlock()
	}
	var (
		recs   []*loggedRecord
		frames []byte
	)
	if err == nil {
		at := s.clock.Now().UnixNano()
		for i, r := range group {
			v, err := recordValue(at, r.c)
			switch {
			case err != nil:
			case r.c.RequestID == "" || len(r.c.RequestID) > bolt.MaxKeySize:
				// bbolt would refuse it, after it was acknowledged.
				err = fmt.Errorf("completion record: request ID of %d bytes", len(r.c.RequestID))
			case !utf8.ValidString(r.c.RequestID):
				// Its JSON would carry U+FFFD: a replay would key it
				// differently from the applier.
				err = errors.New("completion record: request ID is not valid UTF-8")
			case len(v) > wal.MaxPayload:
				err = fmt.Errorf("completion record of %d bytes, at most %d", len(v), wal.MaxPayload)
			}
			if err != nil {
				errs[i] = err
				continue
			}
			rec := &loggedRecord{seq: s.lastSeq + 1 + uint64(len(recs)), id: r.c.RequestID, value: v}
			if s.log != nil {
				frames = wal.AppendFrame(frames, wal.Frame{Seq: rec.seq, Count: 1, Group: s.lastSeq + 1, Payload: v})
			}
			recs = append(recs, rec)
		}
	}
	if err == nil && len(frames) > 0 {
		if err = s.log.Write(frames); err != nil {
			s.failed = fmt.Errorf("completion records: %w", err)
			err = s.failed
		}
	}
	if err != nil {
		for _, r := range group {
			r.done <- err
		}
		return
	}
	full := false
	if len(recs) > 0 {
		s.mu.Lock()
		for _, r := range recs {
			s.unapplied[r.id] = r
		}
		s.queue = append(s.queue, recs...)
		full = len(s.queue) >= applyNow
		s.mu.Unlock()
		s.lastSeq = recs[len(recs)-1].seq
		s.acked.Store(s.lastSeq)
		signal(s.work)
		if full {
			signal(s.urgent)
		}
	}
	for i, r := range group {
		r.done <- errs[i]
	}
	switch {
	case s.log != nil && s.log.Written() >= s.maxLog:
		s.checkpoint()
	case s.log == nil && full:
		// No log bounds what waits for the applier (its rewind waits
		// for it): wait here, or a stalled applier grows the queue
		// and the unapplied index without end.
		s.waitApplied(s.lastSeq)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// checkpoint waits for bbolt to hold everything logged (the applier's
// transactions are fsync'd), then rewinds the log: the next frames
// overwrite the old ones from offset 0, and a replay stops at the first
// old frame (its seq is behind).
func (s *recordStore) checkpoint() {
	if s.waitApplied(s.lastSeq) == nil {
		s.log.Rewind()
	}
}

// applyLoop writes acknowledged records into bbolt, everything queued per
// transaction, and ages records out in the same transaction, until close
// has stopped the committer and the queue is empty.
func (s *recordStore) applyLoop() {
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
		now := s.clock.Now()
		var aged agedOut
		err := s.db.Update(func(tx *bolt.Tx) error {
			if err := applyRecordsLocked(tx, batch); err != nil {
				return err
			}
			var err error
			aged, err = s.sweepLocked(tx, now)
			return err
		})
		if err == nil {
			s.report(aged) // before a flush waiting for this apply returns
		}
		s.mu.Lock()
		if err != nil {
			s.applyErr = fmt.Errorf("completion records: applying logged records: %w", err)
		} else {
			s.appliedSeq = batch[len(batch)-1].seq
			for _, r := range batch {
				if s.unapplied[r.id] == r {
					delete(s.unapplied, r.id)
				}
			}
		}
		close(s.advanced)
		s.advanced = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			s.logger.Error("completion records: the applier stopped; adds are refused", "err", err)
			return
		}
	}
}

// gather waits up to the apply delay for more records, less if someone
// waits for the applier or close has begun.
func (s *recordStore) gather() {
	t := time.NewTimer(s.applyDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.urgent:
	case <-s.stopped:
	}
}

// waitApplied returns once bbolt holds every record up to seq.
func (s *recordStore) waitApplied(seq uint64) error {
	for {
		s.mu.Lock()
		done, err, ch := s.appliedSeq >= seq, s.applyErr, s.advanced
		s.mu.Unlock()
		if err != nil || done {
			return err
		}
		signal(s.urgent)
		select {
		case <-ch:
		case <-s.applied:
			s.mu.Lock()
			done, err = s.appliedSeq >= seq, s.applyErr
			s.mu.Unlock()
			if err == nil && !done {
				err = errRecordsClosed
			}
			return err
		}
	}
}

// flush waits until bbolt holds, and has aged out by, every record
// acknowledged so far.
func (s *recordStore) flush() error { return s.waitApplied(s.acked.Load()) }

// putValueLocked stores a record value for id (in a write transaction).
func putValueLocked(tx *bolt.Tx, id, v []byte) error {
	pb, ab, mb := tx.Bucket(bucketProduced), tx.Bucket(bucketAge), tx.Bucket(bucketRecMeta)
	ab.FillPercent = 0.9 // keyed by time first: it fills at its right edge
	at := int64(binary.BigEndian.Uint64(v))
	size := int64(0)
	if old := pb.Get(id); len(old) >= 8 {
		// The same request again (a retried task): the newer record wins.
		size -= int64(len(old)+2*len(id)) + 8
		if err := ab.Delete(ageKey(int64(binary.BigEndian.Uint64(old)), id)); err != nil {
			return err
		}
	}
	size += int64(len(v)+2*len(id)) + 8
	return errors.Join(pb.Put(id, v), ab.Put(ageKey(at, id), nil), addU64(mb, metaBytes, size))
}

func ageKey(at int64, id []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(at)), id...)
}

// agedOut is what one sweep removed.
type agedOut struct {
	signed, unsigned int
	batches          int
	newest           time.Time // the newest record removed
	full             bool      // removed for size, not age
}

// sweepLocked ages out (in a write transaction) the records older than
// maxAge, then the oldest while the store is over maxBytes, and the signed
// batches older than maxAge, at most sweepChunk of each per call.
func (s *recordStore) sweepLocked(tx *bolt.Tx, now time.Time) (agedOut, error) {
	var out agedOut
	cutoff := now.Add(-s.maxAge).UnixNano()
	pb, ab, sb, mb := tx.Bucket(bucketProduced), tx.Bucket(bucketAge), tx.Bucket(bucketSigned), tx.Bucket(bucketRecMeta)
	bytes := int64(getU64(mb, metaBytes))
	var victims [][]byte
	c := ab.Cursor()
	for k, _ := c.First(); k != nil && len(victims) < sweepChunk; k, _ = c.Next() {
		at := int64(binary.BigEndian.Uint64(k[:8]))
		if at >= cutoff && bytes <= s.maxBytes {
			break
		}
		if at >= cutoff {
			out.full = true
		}
		id := k[8:]
		bytes -= int64(len(pb.Get(id))+2*len(id)) + 8
		victims = append(victims, append([]byte(nil), k...))
	}
	for _, k := range victims {
		id := k[8:]
		if sb.Get(id) != nil {
			out.signed++
		} else {
			out.unsigned++
		}
		if err := errors.Join(pb.Delete(id), ab.Delete(k)); err != nil {
			return out, err
		}
		out.newest = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
	}
	if len(victims) > 0 {
		if err := putU64(mb, metaExpired, uint64(out.newest.UnixNano())); err != nil {
			return out, err
		}
		s.expiredBefore.Store(out.newest.UnixNano())
	}
	n, freed, err := s.sweepSignedLocked(tx, cutoff)
	out.batches = n
	bytes -= freed
	if err != nil {
		return out, err
	}
	return out, putU64(mb, metaBytes, uint64(max(bytes, 0)))
}

// sweepSignedLocked forgets the signed batches older than cutoff. A
// request ID is remembered at least as long as its record: a batch is
// signed after its records were produced, and both age by maxAge.
func (s *recordStore) sweepSignedLocked(tx *bolt.Tx, cutoff int64) (int, int64, error) {
	sab, bb, sb := tx.Bucket(bucketSignedAge), tx.Bucket(bucketSigBatch), tx.Bucket(bucketSigned)
	var victims [][]byte
	c := sab.Cursor()
	for k, _ := c.First(); k != nil && len(victims) < sweepChunk; k, _ = c.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			break
		}
		victims = append(victims, append([]byte(nil), k...))
	}
	var freed int64
	for _, k := range victims {
		bkey := k[8:]
		if v := bb.Get(bkey); v != nil {
			var b SignedBatch
			if err := json.Unmarshal(v, &b); err == nil {
				for _, id := range b.RequestIDs {
					if string(sb.Get([]byte(id))) == string(bkey) {
						if err := sb.Delete([]byte(id)); err != nil {
							return 0, freed, err
						}
					}
					freed += int64(len(id) + len(bkey))
				}
			}
			freed += int64(len(v) + 2*len(bkey) + 8)
		}
		if err := errors.Join(bb.Delete(bkey), sab.Delete(k)); err != nil {
			return 0, freed, err
		}
	}
	return len(victims), freed, nil
}

// report logs and counts what a sweep aged out.
func (s *recordStore) report(a agedOut) {
	if a.signed+a.unsigned > 0 {
		why := "older than the record max age"
		if a.full {
			why = "the record store is full (max bytes)"
		}
		log := s.logger.Info
		if a.unsigned > 0 {
			// Records no prover had countersigned yet: their receipts can
			// no longer be proven.
			log = s.logger.Warn
		}
		log("completion records aged out", "countersigned", a.signed, "never_countersigned", a.unsigned,
			"newest_aged_out", a.newest.UTC(), "why", why, "max_age", s.maxAge, "max_bytes", s.maxBytes)
		s.metrics.RecordWorkerRecords(context.Background(), obs.RecordsAgedOutSigned, a.signed)
		s.metrics.RecordWorkerRecords(context.Background(), obs.RecordsAgedOutUnsigned, a.unsigned)
	}
	if a.batches > 0 {
		s.logger.Info("countersigned batches aged out of the signed set", "batches", a.batches, "max_age", s.maxAge)
	}
}

// get returns the record for requestID unless it is unknown or aged out:
// from the unapplied index if bbolt may not hold it yet, else from bbolt.
func (s *recordStore) get(requestID string) (*task.Completion, bool) {
	cutoff := s.clock.Now().Add(-s.maxAge).UnixNano()
	s.mu.Lock()
	r := s.unapplied[requestID]
	s.mu.Unlock()
	if r != nil {
		c := decodeRecord(r.value, cutoff)
		return c, c != nil
	}
	var c *task.Completion
	s.db.View(func(tx *bolt.Tx) error {
		c = decodeRecord(tx.Bucket(bucketProduced).Get([]byte(requestID)), cutoff)
		return nil
	})
	return c, c != nil
}

// decodeRecord decodes a record value, or nil if there is none or it was
// stored before cutoff (Unix ns).
func decodeRecord(v []byte, cutoff int64) *task.Completion {
	if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < cutoff {
		return nil
	}
	var c task.Completion
	if json.Unmarshal(v[8:], &c) != nil {
		return nil
	}
	return &c
}

// expired reports whether a record produced at t (the time a countersign
// request claims for it) would have aged out of this store by now.
func (s *recordStore) expired(t time.Time) bool {
	n := t.UnixNano()
	return n <= s.expiredBefore.Load() || n < s.clock.Now().Add(-s.maxAge).UnixNano()
}

// signedKey names a signed batch: sequence, then root.
func signedKey(b *SignedBatch) []byte {
	return append(binary.BigEndian.AppendUint64(nil, b.Sequence), b.Root...)
}

// signedLocked looks ids up in the signed set (in any transaction); nil
// if none is there.
func signedLocked(tx *bolt.Tx, ids []string) (map[string]*SignedBatch, error) {
	sb, bb := tx.Bucket(bucketSigned), tx.Bucket(bucketSigBatch)
	var prior map[string]*SignedBatch
	known := map[string]*SignedBatch{}
	for _, id := range ids {
		bk := sb.Get([]byte(id))
		if bk == nil {
			continue
		}
		if prior == nil {
			prior = map[string]*SignedBatch{}
		}
		pb, ok := known[string(bk)]
		if !ok {
			pb = &SignedBatch{}
			if err := json.Unmarshal(bb.Get(bk), pb); err != nil {
				return nil, fmt.Errorf("signed batch %x: %w", bk, err)
			}
			known[string(bk)] = pb
		}
		prior[id] = pb
	}
	return prior, nil
}

// Signed implements CountersignLog on the store.
func (s *recordStore) Signed(ids []string) map[string]*SignedBatch {
	var out map[string]*SignedBatch
	s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = signedLocked(tx, ids)
		return err
	})
	return out
}

// SignOnce implements CountersignLog on the store: one fsync'd
// transaction that checks, signs and records.
func (s *recordStore) SignOnce(b *SignedBatch, sign func() (string, error)) (*SignedBatch, map[string]*SignedBatch, error) {
	var prior map[string]*SignedBatch
	err := s.db.Update(func(tx *bolt.Tx) error {
		sb, bb := tx.Bucket(bucketSigned), tx.Bucket(bucketSigBatch)
		var err error
		if prior, err = signedLocked(tx, b.RequestIDs); err != nil || prior != nil {
			return err
		}
		sig, err := sign()
		if err != nil {
			return err
		}
		b.Signature = sig
		v, err := json.Marshal(b)
		if err != nil {
			return err
		}
		bk := signedKey(b)
		size := int64(len(v) + 2*len(bk) + 8)
		for _, id := range b.RequestIDs {
			if err := sb.Put([]byte(id), bk); err != nil {
				return err
			}
			size += int64(len(id) + len(bk))
		}
		at := binary.BigEndian.AppendUint64(nil, uint64(b.SignedAt.UnixNano()))
		return errors.Join(bb.Put(bk, v), tx.Bucket(bucketSignedAge).Put(append(at, bk...), nil),
			addU64(tx.Bucket(bucketRecMeta), metaBytes, size))
	})
	if err != nil || prior != nil {
		return nil, prior, err
	}
	return b, nil, nil
}

// close stops the committer (queued adds fail), lets the applier write
// every acknowledged record into bbolt, empties the log once bbolt holds
// all of it, and closes both files.
func (s *recordStore) close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.quit)
	<-s.stopped
	<-s.applied
	s.mu.Lock()
	applyErr := s.applyErr
	s.mu.Unlock()
	var logErr error
	if s.log != nil {
		if applyErr == nil && s.failed == nil && s.log.Size() > 0 {
			logErr = s.log.Empty()
		}
		logErr = errors.Join(logErr, s.log.Close())
	}
	return errors.Join(applyErr, logErr, s.db.Close())
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

func addU64(b *bolt.Bucket, k []byte, d int64) error {
	return putU64(b, k, uint64(max(int64(getU64(b, k))+d, 0)))
}

// SignOnce records a countersigned batch in the agent's record store (see
// CountersignLog): the countersigner of a worker whose source is its
// Agent never signs a leaf twice, across restarts.
func (a *Agent) SignOnce(b *SignedBatch, sign func() (string, error)) (*SignedBatch, map[string]*SignedBatch, error) {
	return a.produced.SignOnce(b, sign)
}

// Signed looks request IDs up in the agent's signed set (CountersignLog).
func (a *Agent) Signed(ids []string) map[string]*SignedBatch { return a.produced.Signed(ids) }

// RecordExpired reports whether a completion record produced at t has aged
// out of the agent's store (see DefaultRecordMaxAge), so a countersign
// request for it is refused as expired rather than unknown.
func (a *Agent) RecordExpired(t time.Time) bool { return a.produced.expired(t) }
