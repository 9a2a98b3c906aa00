package responses

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// RedisStore keeps responses in Redis (the cluster mode: every replica
// reads what any one stored). Each response is one key with the TTL as
// its expiry; a sorted set by creation time bounds the count.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	ret    Retention
	now    func() time.Time
}

// NewRedis is a store under prefix (e.g. "{tollgate}:responses:"). now is
// the clock (nil: time.Now).
func NewRedis(c redis.UniversalClient, prefix string, ret Retention, now func() time.Time) *RedisStore {
	if now == nil {
		now = time.Now
	}
	return &RedisStore{c: c, prefix: prefix, ret: ret.WithDefaults(), now: now}
}

func (s *RedisStore) key(id string) string { return s.prefix + "r:" + id }
func (s *RedisStore) index() string        { return s.prefix + "index" }

// Put stores r (stamped with the store's clock when r.Created is zero)
// with the TTL, then trims the index: expired members, and
// the oldest beyond MaxResponses (their keys deleted).
func (s *RedisStore) Put(ctx context.Context, r *Stored) error {
	if r.Created.IsZero() {
		r.Created = s.now().UTC()
	}
	b, err := encode(r, s.ret)
	if err != nil {
		return err
	}
	id := r.Response.ID
	ttl := s.ret.TTL - s.now().Sub(r.Created)
	if ttl <= 0 {
		return nil // already past its retention
	}
	now := s.now()
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.key(id), b, ttl)
		p.ZAdd(ctx, s.index(), redis.Z{Score: float64(r.Created.UnixMilli()), Member: id})
		p.ZRemRangeByScore(ctx, s.index(), "-inf", "("+strconv.FormatInt(now.Add(-s.ret.TTL).UnixMilli(), 10))
		return nil
	})
	if err != nil {
		return apierr.Internal(err)
	}
	n, err := s.c.ZCard(ctx, s.index()).Result()
	if err != nil {
		return apierr.Internal(err)
	}
	if extra := n - int64(s.ret.MaxResponses); extra > 0 {
		old, err := s.c.ZPopMin(ctx, s.index(), extra).Result()
		if err != nil {
			return apierr.Internal(err)
		}
		keys := make([]string, len(old))
		for i, z := range old {
			keys[i] = s.key(z.Member.(string))
		}
		if err := s.c.Del(ctx, keys...).Err(); err != nil {
			return apierr.Internal(err)
		}
	}
	return nil
}

// Get returns owner's response id, or NotFound.
func (s *RedisStore) Get(ctx context.Context, owner, id, param string) (*Stored, error) {
	b, err := s.c.Get(ctx, s.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, NotFound(param, id)
	}
	if err != nil {
		return nil, apierr.Unavailable("store_unavailable", "the response store is unreachable", err)
	}
	return decodeOwned(b, owner, id, s.now(), s.ret.TTL, param)
}

// Delete removes owner's response id, or returns NotFound.
func (s *RedisStore) Delete(ctx context.Context, owner, id string) error {
	if _, err := s.Get(ctx, owner, id, ""); err != nil {
		return err
	}
	if err := s.c.Del(ctx, s.key(id)).Err(); err != nil {
		return apierr.Unavailable("store_unavailable", "the response store is unreachable", err)
	}
	s.c.ZRem(ctx, s.index(), id)
	return nil
}
