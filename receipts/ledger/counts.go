package ledger

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/receipts"
)

// Counts is the ledger's receipts by proof status. Pending counts every
// receipt not yet in a proven or failed batch (open batches included);
// Void the receipt IDs that name nothing billable.
type Counts struct {
	Pending, Proven, Failed, Void int64
}

// Counter is an optional Store extension that counts receipts cheaply
// (the metrics gauge reads it at every scrape).
type Counter interface {
	Counts(ctx context.Context) (Counts, error)
}

// Counts returns the receipts by status: in O(1) when the store is a
// Counter, else Pending only, from a scan of the pending receipts and the
// open batches.
func (l *Ledger) Counts(ctx context.Context) (Counts, error) {
	if c, ok := l.store.(Counter); ok {
		return c.Counts(ctx)
	}
	pending, err := l.store.Pending(ctx)
	if err != nil {
		return Counts{}, err
	}
	open, err := l.store.OpenBatches(ctx)
	if err != nil {
		return Counts{}, err
	}
	n := int64(len(pending))
	for _, b := range open {
		n += int64(len(b.Receipts))
	}
	return Counts{Pending: n}, nil // void receipts are not counted without a Counter
}

// Meta keys of the bolt store's counters of receipts in finished batches,
// updated in the transaction that finishes a batch. Recorded receipts are
// the entries bucket's sequence.
var (
	metaProven = []byte("counts/proven")
	metaFailed = []byte("counts/failed")
	metaVoid   = []byte("counts/void")
)

var _ Counter = (*BoltStore)(nil)

// Counts reads the counters kept by FinishBatch.
func (s *BoltStore) Counts(ctx context.Context) (Counts, error) {
	var c Counts
	err := s.db.View(func(tx *bolt.Tx) error {
		recorded := int64(tx.Bucket(bucketEntries).Sequence())
		mb := tx.Bucket(bucketMeta)
		c.Proven, c.Failed, c.Void = readCount(mb, metaProven), readCount(mb, metaFailed), readCount(mb, metaVoid)
		c.Pending = recorded - c.Proven - c.Failed - c.Void
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("ledger counts: %w", err)
	}
	return c, nil
}

func readCount(mb *bolt.Bucket, k []byte) int64 {
	v := mb.Get(k)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// addFinished adds a just-finished batch's receipts to its status
// counter, inside the finishing transaction.
func addFinished(tx *bolt.Tx, b *Batch) error {
	k := metaFailed
	if b.Status == receipts.StatusProven {
		k = metaProven
	}
	return addCount(tx, k, len(b.Receipts))
}

// addCount adds n to a status counter inside a write transaction.
func addCount(tx *bolt.Tx, k []byte, n int) error {
	if n == 0 {
		return nil
	}
	mb := tx.Bucket(bucketMeta)
	return mb.Put(k, key(uint64(readCount(mb, k)+int64(n))))
}

// addVoid counts one void entry, inside the appending transaction.
func addVoid(tx *bolt.Tx) error {
	mb := tx.Bucket(bucketMeta)
	return mb.Put(metaVoid, key(uint64(readCount(mb, metaVoid)+1)))
}

// initCounts fills the counters of a ledger written before they existed,
// from its finished batches; a no-op once they exist.
func initCounts(tx *bolt.Tx) error {
	mb := tx.Bucket(bucketMeta)
	if mb.Get(metaProven) != nil {
		return nil
	}
	var proven, failed uint64
	ob := tx.Bucket(bucketOpen)
	err := tx.Bucket(bucketBatches).ForEach(func(k, v []byte) error {
		if ob.Get(k) != nil {
			return nil
		}
		var b Batch
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("batch %d: %w", seqOf(k), err)
		}
		if b.Status == receipts.StatusProven {
			proven += uint64(len(b.Receipts))
		} else if b.Status != StatusRecut {
			failed += uint64(len(b.Receipts))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(mb.Put(metaProven, key(proven)), mb.Put(metaFailed, key(failed)))
}
