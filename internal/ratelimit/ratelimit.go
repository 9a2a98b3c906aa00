// Package ratelimit enforces per-key request and token budgets with token
// buckets: Local keeps them in memory for one gateway, Redis shares them
// across replicas through one atomic Lua script, and Fallback serves from
// Local while Redis is unreachable (and says so, for /readyz).
//
// A Rate of Limit per Period is a bucket of capacity Limit refilled
// continuously at Limit/Period: requests per minute are Allow calls with
// cost 1 on a PerMinute(rpm) limiter, tokens per minute are calls with the
// token count as cost on a PerMinute(tpm) one.
package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// Decision is the outcome of one Allow call.
type Decision struct {
	Allowed bool
	// RetryAfter is how long until the cost would fit, when not allowed.
	RetryAfter time.Duration
	// Remaining is what is left in the bucket after this call, rounded down.
	Remaining int64
}

// Limiter decides whether key may spend cost now. A refused call spends
// nothing.
type Limiter interface {
	Allow(ctx context.Context, key string, cost int64, now time.Time) (Decision, error)
	// Debit spends cost whether or not it fits, leaving the bucket in debt
	// (negative) if need be; Allow refuses every cost, 0 included, until the
	// debt has refilled. It charges what is known only afterwards (tokens a
	// completion used), so the budget over time still holds.
	Debit(ctx context.Context, key string, cost int64, now time.Time) error
}

// Rate is Limit units per Period, with bursts up to Limit.
type Rate struct {
	Limit  int64
	Period time.Duration
}

// PerMinute is n per minute.
func PerMinute(n int64) Rate { return Rate{Limit: n, Period: time.Minute} }

// Validate checks the rate is usable.
func (r Rate) Validate() error {
	if r.Limit <= 0 {
		return fmt.Errorf("ratelimit: limit %d must be positive", r.Limit)
	}
	if r.Period < time.Millisecond {
		return fmt.Errorf("ratelimit: period %s must be at least 1ms", r.Period)
	}
	return nil
}

// perNano is the refill rate in units per nanosecond.
func (r Rate) perNano() float64 { return float64(r.Limit) / float64(r.Period) }

func validCost(cost int64) error {
	if cost < 0 {
		return apierr.BadRequest("cost", "invalid_cost", "rate limit cost %d is negative", cost)
	}
	return nil
}

// take is the token-bucket step shared by Local and (in Lua) Redis: refill
// tokens for the time since last (never backwards), then spend cost if it
// fits. It returns the new state and the decision.
func take(r Rate, tokens float64, last, now int64, cost int64, force bool) (float64, int64, Decision) {
	if now < last {
		now = last
	}
	tokens = math.Min(float64(r.Limit), tokens+float64(now-last)*r.perNano())
	d := Decision{}
	if force || float64(cost) <= tokens {
		tokens -= float64(cost)
		d.Allowed = true
	} else if cost > r.Limit {
		d.RetryAfter = r.Period // never fits; ask again after a full period
	} else {
		d.RetryAfter = time.Duration(math.Ceil((float64(cost) - tokens) / r.perNano()))
	}
	d.Remaining = int64(math.Floor(tokens))
	return tokens, now, d
}

// Local is an in-memory token bucket per key, safe for concurrent use.
// Idle keys whose bucket has refilled are dropped as new keys arrive, so
// memory follows the number of active keys.
type Local struct {
	rate Rate

	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt int // sweep idle buckets when the map reaches this size
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

var _ Limiter = (*Local)(nil)

// NewLocal returns an in-memory limiter at rate.
func NewLocal(rate Rate) (*Local, error) {
	if err := rate.Validate(); err != nil {
		return nil, err
	}
	return &Local{rate: rate, buckets: map[string]*bucket{}, sweepAt: 1024}, nil
}

func (l *Local) Allow(ctx context.Context, key string, cost int64, now time.Time) (Decision, error) {
	return l.spend(key, cost, now, false)
}

func (l *Local) Debit(ctx context.Context, key string, cost int64, now time.Time) error {
	_, err := l.spend(key, cost, now, true)
	return err
}

func (l *Local) spend(key string, cost int64, now time.Time, force bool) (Decision, error) {
	if err := validCost(cost); err != nil {
		return Decision{}, err
	}
	ns := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.sweepAt {
			l.sweepLocked(ns)
		}
		b = &bucket{tokens: float64(l.rate.Limit), last: ns}
		l.buckets[key] = b
	}
	var d Decision
	b.tokens, b.last, d = take(l.rate, b.tokens, b.last, ns, cost, force)
	return d, nil
}

// sweepLocked drops buckets that would be full by now (forgetting them
// changes no decision) and sets the next sweep size.
func (l *Local) sweepLocked(now int64) {
	for k, b := range l.buckets {
		if b.tokens+float64(now-b.last)*l.rate.perNano() >= float64(l.rate.Limit) {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(1024, 2*len(l.buckets))
}
