package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/cluster"
	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/ratelimit"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/scheduler"
)

// spoolFile is the local receipt spool of a gateway in the Redis mode.
const spoolFile = "receipts-spool.db"

// dialRedis connects to url and checks it answers. Timeouts are short so
// an outage is noticed (and ridden out with the local fallbacks) within a
// second or two instead of stalling requests; blocking reads
// (XREADGROUP) get their own longer deadline from go-redis. The client's
// own messages (a failed dial during an outage) go to logger.
func dialRedis(ctx context.Context, url string, logger *slog.Logger) (*redis.Client, error) {
	redis.SetLogger(redisLogger{logger})
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("--redis: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, 2*time.Second, 2*time.Second
	opts.MaxRetries, opts.DialerRetries = 1, 1
	c := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis at %s: %w", opts.Addr, err)
	}
	return c, nil
}

// redisLogger routes go-redis's internal printf-style messages (it has a
// process-wide logger) into the structured log instead of stderr.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// redisMode is what a gateway shares through Redis: the worker registry,
// the rate limits, the receipt ledger (behind a local spool) and the
// proving queue.
type redisMode struct {
	client   *redis.Client
	registry *cluster.Registry
	store    *ledger.RedisStore // the shared ledger (and proving queue)
	spool    *ledger.SpoolStore // what the gateway records through

	mu        sync.Mutex
	fallbacks []*ratelimit.Fallback
}

// openRedisMode dials Redis and builds the shared pieces for a replica
// whose scheduler is sched. Redis must answer at start-up; later outages
// are ridden out.
func openRedisMode(cfg *config.Config, sched *scheduler.Scheduler, logger *slog.Logger) (*redisMode, error) {
	c, err := dialRedis(context.Background(), cfg.Redis.URL, logger)
	if err != nil {
		return nil, err
	}
	m := &redisMode{client: c}
	hbTimeout := cfg.Scheduler.HeartbeatTimeout
	if hbTimeout == 0 {
		hbTimeout = 3 * time.Second
	}
	m.registry, err = cluster.New(c, sched, cluster.Options{Prefix: cfg.Redis.Prefix, TTL: cfg.Redis.WorkerTTL.D(),
		HeartbeatTimeout: hbTimeout, Replica: cfg.Listen, Logger: logger})
	if err != nil {
		c.Close()
		return nil, err
	}
	return m, nil
}

// openLedger opens the shared ledger and the local spool in front of it.
func (m *redisMode) openLedger(cfg *config.Config, logger *slog.Logger) (ledger.Store, error) {
	var err error
	m.store, err = ledger.OpenRedis(context.Background(), "", ledger.RedisOptions{Client: m.client, Prefix: cfg.Redis.Prefix + "ledger:"})
	if err != nil {
		return nil, err
	}
	m.spool, err = ledger.OpenSpool(m.store, filepath.Join(cfg.DataDir, spoolFile), ledger.SpoolOptions{
		Logger: logger, Ping: func(ctx context.Context) error { return m.client.Ping(ctx).Err() }})
	if err != nil {
		m.store.Close()
		return nil, err
	}
	return m.spool, nil
}

// limiter makes one per-key rate shared across replicas, falling back to a
// local bucket while Redis is down.
func (m *redisMode) limiter(cfg *config.Config, logger *slog.Logger) func(ratelimit.Rate) (ratelimit.Limiter, error) {
	return func(r ratelimit.Rate) (ratelimit.Limiter, error) {
		shared, err := ratelimit.NewRedis(m.client, cfg.Redis.Prefix+"rl:", r)
		if err != nil {
			return nil, err
		}
		local, err := ratelimit.NewLocal(r)
		if err != nil {
			return nil, err
		}
		f := ratelimit.NewFallback(shared, local, logger)
		m.mu.Lock()
		m.fallbacks = append(m.fallbacks, f)
		m.mu.Unlock()
		return f, nil
	}
}

// readiness reports the first shared piece that is degraded.
func (m *redisMode) readiness() []func() error {
	checks := []func() error{m.registry.Err}
	if m.spool != nil {
		checks = append(checks, m.spool.Err)
	}
	checks = append(checks, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, f := range m.fallbacks {
			if err := f.Err(); err != nil {
				return fmt.Errorf("shared rate limits unreachable, enforcing per-replica limits: %w", err)
			}
		}
		return nil
	})
	return checks
}

// sharedSessions lets a worker heartbeat to any replica: a session token
// this replica did not issue is accepted when the shared registry carries
// it for that worker.
type sharedSessions struct {
	gateway.Registrar
	registry *cluster.Registry
}

func (s sharedSessions) VerifySession(workerID, token string) error {
	err := s.Registrar.VerifySession(workerID, token)
	if err != nil && s.registry.VerifySession(workerID, token) {
		return nil
	}
	return err
}

// close closes the ledger (and spool) and the client.
func (m *redisMode) close() error {
	var err error
	if m.spool != nil {
		err = m.spool.Close() // closes m.store too
	} else if m.store != nil {
		err = m.store.Close()
	}
	if cerr := m.client.Close(); err == nil {
		err = cerr
	}
	return err
}
