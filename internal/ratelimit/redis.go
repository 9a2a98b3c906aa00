package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a token bucket per key shared by every replica using the same
// Redis and prefix. Each Allow is one EVALSHA of a script that refills,
// decides and stores atomically, so replicas never double-spend; the key
// expires (PEXPIRE) once its bucket would be full again.
//
// Time comes from the caller's now, so tests drive it; a bucket's clock
// never goes backwards, so a replica whose clock lags simply refills
// nothing until it catches up. Keep replica clocks NTP-synchronised.
type Redis struct {
	c      redis.Scripter
	prefix string
	rate   Rate
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter at rate whose buckets are keys prefix+key on c
// (a *redis.Client, ClusterClient or Ring).
func NewRedis(c redis.Scripter, prefix string, rate Rate) (*Redis, error) {
	if err := rate.Validate(); err != nil {
		return nil, err
	}
	return &Redis{c: c, prefix: prefix, rate: rate}, nil
}

// bucketScript: KEYS[1] bucket hash {t: tokens, n: last refill, unix µs};
// ARGV limit, period µs, cost, now µs, force (1: Debit, spend even into
// debt). Returns {allowed 0/1, remaining,
// retry after µs}. Same arithmetic as take.
var bucketScript = redis.NewScript(`
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local force = ARGV[5] == '1'
local s = redis.call('HMGET', KEYS[1], 't', 'n')
local tokens = tonumber(s[1]) or limit
local last = tonumber(s[2]) or now
if now < last then now = last end
tokens = math.min(limit, tokens + (now - last) * limit / period)
local allowed, retry = 0, 0
if force or cost <= tokens then
  tokens = tokens - cost
  allowed = 1
elseif cost > limit then
  retry = period
else
  retry = math.ceil((cost - tokens) * period / limit)
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'n', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((limit - tokens) * period / limit / 1000) + 1000)
return {allowed, math.floor(tokens), retry}
`)

func (r *Redis) Allow(ctx context.Context, key string, cost int64, now time.Time) (Decision, error) {
	return r.spend(ctx, key, cost, now, 0)
}

func (r *Redis) Debit(ctx context.Context, key string, cost int64, now time.Time) error {
	_, err := r.spend(ctx, key, cost, now, 1)
	return err
}

func (r *Redis) spend(ctx context.Context, key string, cost int64, now time.Time, force int) (Decision, error) {
	if err := validCost(cost); err != nil {
		return Decision{}, err
	}
	res, err := bucketScript.Run(ctx, r.c, []string{r.prefix + key},
		r.rate.Limit, r.rate.Period.Microseconds(), cost, now.UnixMicro(), force).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(res) != 3 {
		return Decision{}, fmt.Errorf("ratelimit: redis returned %d values, want 3", len(res))
	}
	return Decision{Allowed: res[0] == 1, Remaining: res[1], RetryAfter: time.Duration(res[2]) * time.Microsecond}, nil
}
