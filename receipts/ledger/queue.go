package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/receipts"
)

// Queue is an optional Store extension: a proving queue shared by any
// number of provers, each batch handed to one of them at a time. A store
// that is a Queue puts every batch on it as AssignBatch stores it; the
// prover takes jobs with Claim instead of proving every open batch itself.
//
// Delivery is at least once: a job whose prover dies (or stalls for longer
// than the claim's idle time without Touch) is handed to another. That
// "proven exactly once" still holds comes from FinishBatch: only the first
// outcome of a batch is stored and counted, later ones are no-ops.
type Queue interface {
	// Claim returns the next job for consumer: first a job some other
	// consumer has held idle for at least minIdle (its prover is presumed
	// dead), else a new one, waiting up to block for it. It returns nil,
	// nil when there is none.
	Claim(ctx context.Context, consumer string, minIdle, block time.Duration) (*Job, error)
	// Touch renews consumer's claim on j (resets its idle time), so that a
	// long proof is not taken over while its prover is alive.
	Touch(ctx context.Context, consumer string, j *Job) error
	// Ack removes a finished job from the queue.
	Ack(ctx context.Context, j *Job) error
}

// Job is one batch handed to one prover. Batch is as stored when claimed:
// a batch already proven or failed (its earlier prover finished but died
// before Ack) needs only Ack.
type Job struct {
	ID    string // the stream entry ID
	Batch *Batch
	// Deliveries counts how often the job has been handed out (1 the
	// first time).
	Deliveries int64
}

// proverGroup is the consumer group every prover joins.
const proverGroup = "provers"

var _ Queue = (*RedisStore)(nil)

// The proving queue is the stream "jobs" with one consumer group, which
// gives what the prover needs: XREADGROUP hands each new entry to exactly
// one consumer and keeps it in that consumer's pending list until XACK;
// XAUTOCLAIM moves entries idle longer than min-idle to a live consumer;
// XCLAIM with min-idle 0 renews a claim. With appendonly yes the stream,
// the group and its pending lists survive a Redis restart like the rest of
// the ledger.

func (s *RedisStore) jobsKey() string { return s.prefix + "jobs" }

// ensureGroup creates the consumer group (and the stream) if missing. The
// group starts at 0 so jobs queued before the first prover joined are
// delivered too.
func (s *RedisStore) ensureGroup(ctx context.Context) error {
	err := s.c.XGroupCreateMkStream(ctx, s.jobsKey(), proverGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("ledger: redis create proving group: %w", err)
	}
	return nil
}

func isNoGroup(err error) bool { return err != nil && strings.Contains(err.Error(), "NOGROUP") }

func (s *RedisStore) Claim(ctx context.Context, consumer string, minIdle, block time.Duration) (*Job, error) {
	if consumer == "" {
		return nil, errors.New("ledger: claim needs a consumer name")
	}
	msgs, err := s.claim(ctx, consumer, minIdle, block)
	if isNoGroup(err) { // first use, or a Redis that lost its data
		if err = s.ensureGroup(ctx); err == nil {
			msgs, err = s.claim(ctx, consumer, minIdle, block)
		}
	}
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	m := msgs[0]
	j := &Job{ID: m.ID}
	str, _ := m.Values["batch"].(string)
	seq, perr := strconv.ParseUint(str, 10, 64)
	if perr != nil || seq == 0 {
		// Not a job this code wrote: drop it rather than block the queue.
		s.Ack(ctx, j)
		return nil, fmt.Errorf("ledger: proving queue entry %s names no batch (%q); dropped", m.ID, str)
	}
	bs, err := s.batches(ctx, []uint64{seq})
	if err != nil {
		return nil, err
	}
	j.Batch = bs[0]
	if p, err := s.c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: s.jobsKey(), Group: proverGroup,
		Start: m.ID, End: m.ID, Count: 1}).Result(); err == nil && len(p) == 1 {
		j.Deliveries = p[0].RetryCount
	}
	return j, nil
}

// claim takes one stale job, else one new job.
func (s *RedisStore) claim(ctx context.Context, consumer string, minIdle, block time.Duration) ([]redis.XMessage, error) {
	msgs, _, err := s.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.jobsKey(), Group: proverGroup,
		MinIdle: minIdle, Start: "0-0", Count: 1, Consumer: consumer}).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis claim: %w", err)
	}
	if len(msgs) > 0 {
		return msgs, nil
	}
	streams, err := s.c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: proverGroup, Consumer: consumer,
		Streams: []string{s.jobsKey(), ">"}, Count: 1, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read queue: %w", err)
	}
	if len(streams) == 0 {
		return nil, nil
	}
	return streams[0].Messages, nil
}

func (s *RedisStore) Touch(ctx context.Context, consumer string, j *Job) error {
	err := s.c.XClaimJustID(ctx, &redis.XClaimArgs{Stream: s.jobsKey(), Group: proverGroup,
		Consumer: consumer, MinIdle: 0, Messages: []string{j.ID}}).Err()
	if err != nil {
		return fmt.Errorf("ledger: redis renew claim: %w", err)
	}
	return nil
}

// Ack acknowledges the job and deletes its entry, so the stream holds only
// jobs not yet done.
func (s *RedisStore) Ack(ctx context.Context, j *Job) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, s.jobsKey(), proverGroup, j.ID)
		p.XDel(ctx, s.jobsKey(), j.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ledger: redis ack: %w", err)
	}
	return nil
}

// Finished reports whether the job's batch already has its outcome.
func (j *Job) Finished() bool { return j.Batch != nil && j.Batch.Status != receipts.StatusPending }
