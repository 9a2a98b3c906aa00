package ledger

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OldestPendingReader is an optional Store extension that finds the oldest
// receipt not yet in a batch without reading every pending one.
type OldestPendingReader interface {
	// OldestPending returns the first pending entry, or nil if none.
	OldestPending(ctx context.Context) (*Entry, error)
}

// OldestPending is when the oldest receipt not yet proven or failed was
// recorded (ok false when there is none): pending receipts and those in
// open batches. now minus it is the proving backlog's age, the figure a
// backlog alert and readiness threshold watch: a count says how much waits,
// this says for how long, and only it grows without bound when proving
// falls behind.
func (l *Ledger) OldestPending(ctx context.Context) (oldest time.Time, ok bool, err error) {
	var first *Entry
	if r, isReader := l.store.(OldestPendingReader); isReader {
		first, err = r.OldestPending(ctx)
	} else {
		var es []*Entry
		es, err = l.store.Pending(ctx)
		if len(es) > 0 {
			first = es[0]
		}
	}
	if err != nil {
		return time.Time{}, false, err
	}
	if first != nil {
		oldest, ok = first.RecordedAt, true
	}
	open, err := l.store.OpenBatches(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	for _, b := range open {
		if len(b.Receipts) == 0 {
			continue
		}
		// A batch's receipts are in leaf order, cut from pending oldest
		// first: its first receipt is its oldest.
		es, err := l.store.Entries(ctx, b.Receipts[:1])
		if err != nil {
			return time.Time{}, false, err
		}
		if t := es[0].RecordedAt; !ok || t.Before(oldest) {
			oldest, ok = t, true
		}
	}
	return oldest, ok, nil
}

var (
	_ OldestPendingReader = (*BoltStore)(nil)
	_ OldestPendingReader = (*RedisStore)(nil)
	_ OldestPendingReader = (*SpoolStore)(nil)
)

// OldestPending reads the first key of the pending bucket (ledger order).
func (s *BoltStore) OldestPending(ctx context.Context) (*Entry, error) {
	var e *Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketPending).Cursor().First()
		if k == nil {
			return nil
		}
		var err error
		e, err = getEntry(tx, seqOf(k))
		return err
	})
	return e, err
}

// OldestPending reads the first member of the pending sorted set.
func (s *RedisStore) OldestPending(ctx context.Context) (*Entry, error) {
	ids, err := s.c.ZRange(ctx, s.prefix+"pending", 0, 0).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	es, err := s.entries(ctx, ids)
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// OldestPending asks the primary (receipts waiting in the spool are not
// yet in any ledger and are not counted: the spool says so itself).
func (s *SpoolStore) OldestPending(ctx context.Context) (*Entry, error) {
	if r, ok := s.Store.(OldestPendingReader); ok {
		return r.OldestPending(ctx)
	}
	es, err := s.Store.Pending(ctx)
	if err != nil || len(es) == 0 {
		return nil, err
	}
	return es[0], nil
}
