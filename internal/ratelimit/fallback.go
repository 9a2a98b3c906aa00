package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// Fallback asks Primary (the shared Redis limiter) and, when it fails,
// decides with Local instead, so the gateway keeps enforcing per-replica
// limits while Redis is down. The first failure logs a warning, recovery
// logs once more; Err reports the outage for readiness checks.
type Fallback struct {
	primary Limiter
	local   Limiter
	logger  *slog.Logger

	mu   sync.Mutex
	down error // the last primary failure, nil while healthy
}

var _ Limiter = (*Fallback)(nil)

// NewFallback returns a limiter using primary, or local while primary fails.
func NewFallback(primary, local Limiter, logger *slog.Logger) *Fallback {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Fallback{primary: primary, local: local, logger: logger}
}

func (f *Fallback) Allow(ctx context.Context, key string, cost int64, now time.Time) (Decision, error) {
	d, err := f.primary.Allow(ctx, key, cost, now)
	if f.outage(ctx, err) {
		return f.local.Allow(ctx, key, cost, now)
	}
	return d, err
}

// Debit charges the shared bucket, or the local one while Redis is down
// (the charge is then not shared: per-replica limits only, as for Allow).
func (f *Fallback) Debit(ctx context.Context, key string, cost int64, now time.Time) error {
	err := f.primary.Debit(ctx, key, cost, now)
	if f.outage(ctx, err) {
		return f.local.Debit(ctx, key, cost, now)
	}
	return err
}

// outage records the primary's health after a call that returned err and
// reports whether the local limiter should decide instead.
func (f *Fallback) outage(ctx context.Context, err error) bool {
	if err == nil {
		f.mu.Lock()
		if f.down != nil {
			f.down = nil
			f.logger.Info("shared rate limiter recovered; enforcing limits across replicas again")
		}
		f.mu.Unlock()
		return false
	}
	var ae *apierr.Error
	if errors.As(err, &ae) || ctx.Err() != nil {
		return false // the caller's fault or gone: not an outage
	}
	f.mu.Lock()
	if f.down == nil {
		f.logger.Warn("shared rate limiter unavailable; enforcing per-replica limits only", "err", err)
	}
	f.down = err
	f.mu.Unlock()
	return true
}

// Err is nil while the primary limiter answers, else its last error.
func (f *Fallback) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down
}
