package main

import (
	"errors"
	"fmt"
	"log/slog"
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

// openBoltStore opens the embedded ledger as a ledger.Store that is nil
// when opening fails (OpenBolt's typed nil *BoltStore, stored in the
// interface, was non-nil and closing it panicked).
func openBoltStore(path string) (ledger.Store, error) {
	s, err := ledger.OpenBolt(path)
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
