package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// SpoolStore keeps a gateway recording receipts while its shared store
// (Redis) is unreachable: an append the primary cannot take is written to
// a local bbolt file instead (fsync'd, so it is just as acknowledged), and
// a flusher moves spooled receipts to the primary, in order, once it
// answers again. Nothing acknowledged is lost: a receipt leaves the spool
// only after the primary has taken it, and one whose append reached Redis
// although its reply did not (the append script's duplicate check) counts
// as taken.
//
// While the primary is marked down, appends go straight to the spool (no
// time spent on a dead connection) and the flusher probes it every
// RetryInterval. Everything else (reads, batches, the proving queue's
// stores) is the primary's: a spooled receipt is served by Get as pending
// but appears in Export only once flushed, after the receipts recorded
// meanwhile by healthy replicas.
type SpoolStore struct {
	Store // the primary
	db    *bolt.DB
	opts  SpoolOptions

	mu   sync.Mutex
	down error // why the primary is being bypassed; nil while healthy
	kick chan struct{}
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// SpoolOptions configure OpenSpool.
type SpoolOptions struct {
	Logger *slog.Logger
	// RetryInterval is how often the flusher tries the primary while
	// receipts wait (default 1s).
	RetryInterval time.Duration
	// Ping checks the primary is back before a flush (default: none, the
	// flush's first append is the probe).
	Ping func(ctx context.Context) error
}

var spoolBucket = []byte("spool")

// OpenSpool opens (or creates) the spool file at path in front of primary
// and starts its flusher; receipts left from an earlier run are flushed
// first.
func OpenSpool(primary Store, path string, opts SpoolOptions) (*SpoolStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open receipt spool %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(spoolBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	s := &SpoolStore{Store: primary, db: db, opts: opts, kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{})}
	go s.flushLoop()
	s.wake()
	return s, nil
}

var _ Store = (*SpoolStore)(nil)

// Append tries the primary (unless it is marked down) and spools what it
// cannot take. A duplicate ID, a bad entry or the caller's own context
// ending are the caller's answer, not an outage.
func (s *SpoolStore) Append(ctx context.Context, entries []*Entry) error {
	if s.Err() == nil {
		err := s.Store.Append(ctx, entries)
		if err == nil || errors.Is(err, ErrDuplicate) || ctx.Err() != nil || errors.Is(err, errClosed) {
			return err
		}
		s.markDown(err)
	}
	if err := s.spool(entries); err != nil {
		return err
	}
	s.wake()
	return nil
}

func (s *SpoolStore) markDown(err error) {
	s.mu.Lock()
	if s.down == nil {
		s.opts.Logger.Warn("receipt store unreachable; spooling receipts on local disk until it returns", "err", err)
	}
	s.down = err
	s.mu.Unlock()
}

// Err is nil while receipts go to the primary; otherwise it says why they
// are being spooled (for /readyz).
func (s *SpoolStore) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return fmt.Errorf("receipt store unreachable, receipts spooled locally: %w", s.down)
	}
	return nil
}

// spool writes entries in one fsync'd transaction, keyed by a local
// sequence so the flusher keeps their order.
func (s *SpoolStore) spool(entries []*Entry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(spoolBucket)
		for _, e := range entries {
			v, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("spool receipt %s: %w", e.ID, err)
			}
			n, _ := b.NextSequence()
			if err := b.Put(binary.BigEndian.AppendUint64(nil, n), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *SpoolStore) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *SpoolStore) flushLoop() {
	defer close(s.done)
	t := time.NewTicker(s.opts.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-s.kick:
		case <-t.C:
		}
		if err := s.flush(); err != nil {
			s.markDown(err)
			continue
		}
		s.mu.Lock()
		if s.down != nil {
			s.opts.Logger.Info("receipt store back; spooled receipts flushed")
			s.down = nil
		}
		s.mu.Unlock()
	}
}

// flushChunk bounds how many receipts one flush round reads and deletes.
const flushChunk = 256

// flush moves every spooled receipt to the primary, oldest first. It stops
// at the first failure, leaving the rest (and that one) spooled.
func (s *SpoolStore) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		type item struct {
			key   []byte
			entry *Entry
		}
		var items []item
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(spoolBucket).Cursor()
			for k, v := c.First(); k != nil && len(items) < flushChunk; k, v = c.Next() {
				var e Entry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("spooled receipt %x: %w", k, err)
				}
				items = append(items, item{append([]byte(nil), k...), &e})
			}
			return nil
		})
		if err != nil || len(items) == 0 {
			return err
		}
		if s.opts.Ping != nil {
			if err := s.opts.Ping(ctx); err != nil {
				return err
			}
		}
		var flushed [][]byte
		var ferr error
		for _, it := range items {
			e := it.entry
			e.Seq = 0
			err := s.Store.Append(ctx, []*Entry{e})
			if err != nil && !errors.Is(err, ErrDuplicate) {
				ferr = err
				break
			}
			if errors.Is(err, ErrDuplicateRequest) {
				// Its request was recorded under another receipt meanwhile:
				// a second record of one request is never stored.
				s.opts.Logger.Warn("spooled receipt dropped: its request is already recorded", "receipt", e.ID, "request_id", requestID(e))
			}
			flushed = append(flushed, it.key)
		}
		if len(flushed) > 0 {
			if err := s.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(spoolBucket)
				for _, k := range flushed {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
			s.opts.Logger.Info("spooled receipts flushed to the receipt store", "receipts", len(flushed))
		}
		if ferr != nil {
			return ferr
		}
	}
}

// Spooled returns how many receipts wait in the spool.
func (s *SpoolStore) Spooled() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(spoolBucket).Stats().KeyN
		return nil
	})
	return n, err
}

// Get serves a receipt from the primary, or, while it is spooled (or the
// primary is unreachable), from the spool as pending.
func (s *SpoolStore) Get(ctx context.Context, id string) (*Entry, *Batch, error) {
	e, b, err := s.Store.Get(ctx, id)
	if err == nil {
		return e, b, nil
	}
	if se := s.spooled(id); se != nil {
		return se, nil, nil
	}
	return nil, nil, err
}

// spooled finds a receipt in the spool (a scan: the spool is small and
// only consulted for receipts the primary does not have).
func (s *SpoolStore) spooled(id string) *Entry {
	var found *Entry
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(spoolBucket).ForEach(func(_, v []byte) error {
			var e Entry
			if json.Unmarshal(v, &e) == nil && e.ID == id {
				found = &e
				return errStop
			}
			return nil
		})
	})
	if found != nil {
		found.Seq, found.BatchSeq, found.SubjectSeq = 0, 0, 0
	}
	return found
}

var errStop = errors.New("stop")

var _ Counter = (*SpoolStore)(nil)

// Counts adds the spooled receipts to the primary's pending count.
func (s *SpoolStore) Counts(ctx context.Context) (Counts, error) {
	c, ok := s.Store.(Counter)
	if !ok {
		return Counts{}, apierr.Internal(errors.New("ledger: spool's primary store does not count"))
	}
	n, err := c.Counts(ctx)
	if err != nil {
		return n, err
	}
	sp, err := s.Spooled()
	n.Pending += int64(sp)
	return n, err
}

// Close stops the flusher, closes the spool file and the primary.
func (s *SpoolStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		<-s.done
		err = errors.Join(s.db.Close(), s.Store.Close())
	})
	return err
}

// SwapMeta forwards to the primary's compare-and-swap (see MetaSwapper);
// a primary without one gets a plain compare, then write.
func (s *SpoolStore) SwapMeta(ctx context.Context, k string, old, v []byte) (bool, error) {
	if sw, ok := s.Store.(MetaSwapper); ok {
		return sw.SwapMeta(ctx, k, old, v)
	}
	cur, err := s.Store.Meta(ctx, k)
	if err != nil {
		return false, err
	}
	if (cur == nil) != (old == nil) || !bytes.Equal(cur, old) {
		return false, nil
	}
	return true, s.Store.PutMeta(ctx, k, v)
}
