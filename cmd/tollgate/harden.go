package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
)

// knownModels lists the registrar's allowed model names (configuration
// and POST /v1/admin/models) for the gateway's restart warm-up.
func knownModels(r *workers.Registrar) func() []string {
	return func() []string {
		ms := r.AllowedModels()
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.Name
		}
		return out
	}
}

// openBoltStore opens the embedded ledger (bbolt behind its write-ahead
// log, path+"-wal"; an existing bbolt file opens as it is) as a
// ledger.Store that is nil when opening fails (OpenBolt's typed nil
// *BoltStore, stored in the interface, was non-nil and closing it
// panicked).
func openBoltStore(path string) (ledger.Store, error) {
	s, err := ledger.OpenWAL(path, ledger.WALOptions{})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w (the file is locked: is another gateway or prover using this data directory?)", err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// proverLogger is the prover's logger with repeats limited per worker: a
// worker that cannot be reached made it log an ERROR and a WARN three
// times a second for as long as it was gone. The first of each (worker,
// message) passes, then one a minute with the count held back.
func proverLogger(l *slog.Logger) *slog.Logger {
	return obs.LimitRepeats(l, obs.RepeatLimit{Interval: time.Minute, Keys: []string{"worker"}})
}

// backlogAge is the proving backlog's age (the oldest receipt neither
// proven nor failed) for the gauge and /readyz, read from the ledger at
// most every backlogAgeTTL so that neither a scrape nor a load balancer's
// probes turn into ledger reads.
type backlogAge struct {
	ledger *ledger.Ledger
	now    func() time.Time // default time.Now

	mu  sync.Mutex
	at  time.Time
	age time.Duration
	err error
}

const backlogAgeTTL = 5 * time.Second

func (b *backlogAge) get(ctx context.Context) (time.Duration, error) {
	now := time.Now
	if b.now != nil {
		now = b.now
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t := now()
	if !b.at.IsZero() && t.Sub(b.at) < backlogAgeTTL {
		return b.age, b.err
	}
	oldest, ok, err := b.ledger.OldestPending(ctx)
	b.at, b.age, b.err = t, 0, err
	if err == nil && ok {
		b.age = max(t.Sub(oldest), 0)
	}
	return b.age, b.err
}

// readiness fails /readyz while the backlog is older than max: the replica
// keeps serving, but its load balancer and its operator are told that
// receipts are not being proven in time.
func (b *backlogAge) readiness(max time.Duration) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		age, err := b.get(ctx)
		if err != nil {
			return fmt.Errorf("proving backlog: %w", err)
		}
		if age > max {
			return fmt.Errorf("the oldest unproven receipt is %s old (max_pending_age %s)", age.Round(time.Second), max)
		}
		return nil
	}
}
