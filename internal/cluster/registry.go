// Package cluster shares the worker registry among gateway replicas
// through Redis, so that a worker registered on one replica is routable
// from all of them. The scheduler stays I/O-free: Registry sits between the
// gateway's registration routes and this replica's scheduler, writes every
// registration and heartbeat it receives to Redis, and feeds the workers
// other replicas received into the scheduler through the same Upsert /
// Heartbeat / Remove calls. Each replica dials each worker itself (workers
// serve HTTP and accept any link that presents their session token).
//
// Layout, every key under Prefix:
//
//	workers       sorted set: worker ID, scored by its last beat (unix ms)
//	w:<worker ID> hash {reg: registration JSON (session token included),
//	              hb: last heartbeat JSON, at: unix ms of the last beat,
//	              by: the replica that received it}; expires TTL after it
//
// Redis therefore holds workers' session tokens: like the ledger, it must
// be private to the deployment.
//
// Liveness: a worker counts as alive on every replica while its last beat,
// on any replica, is younger than the scheduler's heartbeat timeout; the
// scheduler's own expiry takes it out of rotation after that, and its
// record disappears from Redis TTL after its last beat (a deregistration
// deletes it at once), which removes it everywhere. The beat times are
// the receiving replica's clock: keep replicas NTP-synchronised.
//
// Redis unreachable: each replica keeps routing with what it has. Workers
// that heartbeat to it directly stay fresh as always; workers it learned
// from Redis are kept alive with their last telemetry for OutageGrace (a
// worker that really died is still ejected by the scheduler on the first
// failed dispatch), and Err reports the outage for /readyz.
package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Local is this replica's registry: *scheduler.Scheduler.
type Local interface {
	Upsert(w *task.Registered)
	Heartbeat(hb *task.Heartbeat) error
	Remove(workerID string)
	// Dispute takes a worker out of rotation for good (an audit caught
	// it); see scheduler.Scheduler.Dispute.
	Dispute(workerID, reason string)
}

// Options configure a Registry.
type Options struct {
	// Prefix starts every key (default "{tollgate}:").
	Prefix string
	// TTL is how long a worker's record outlives its last beat (default
	// 10s). It must exceed HeartbeatTimeout.
	TTL time.Duration
	// HeartbeatTimeout is the scheduler's: a record whose last beat is
	// older is not fed to this replica (default 3s).
	HeartbeatTimeout time.Duration
	// SyncInterval is how often Redis is read (default 250ms): the lag
	// before a worker registered elsewhere is routable here.
	SyncInterval time.Duration
	// OutageGrace is how long workers learned from Redis are kept alive
	// while Redis is unreachable (default 30s).
	OutageGrace time.Duration
	// Replica names this gateway in the records (diagnostics only).
	Replica string
	Clock   clock.Clock
	Logger  *slog.Logger
}

func (o *Options) defaults() error {
	if o.Prefix == "" {
		o.Prefix = "{tollgate}:"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.TTL, 10*time.Second)
	def(&o.HeartbeatTimeout, 3*time.Second)
	def(&o.SyncInterval, 250*time.Millisecond)
	def(&o.OutageGrace, 30*time.Second)
	switch {
	case o.TTL <= o.HeartbeatTimeout:
		return fmt.Errorf("cluster: TTL %s must exceed the heartbeat timeout %s", o.TTL, o.HeartbeatTimeout)
	case o.SyncInterval < 0 || o.OutageGrace < 0 || o.HeartbeatTimeout < 0:
		return errors.New("cluster: negative interval")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Registry is the shared registry in front of one replica's scheduler. It
// satisfies the gateway's WorkerRegistry. Safe for concurrent use.
type Registry struct {
	c     redis.UniversalClient
	local Local
	opts  Options

	mu        sync.Mutex
	known     map[string]*known // every worker fed to local, by ID
	disputed  map[string]string // disputes applied to local, from anywhere: ID → reason
	down      error             // the last Redis failure; nil while healthy
	downSince time.Time
}

// known is what this replica has fed its scheduler about one worker.
type known struct {
	reg *task.Registered
	hb  *task.Heartbeat // the last one seen, for the outage refresh
	// at is the beat time (unix ms) of the last record applied from Redis.
	at int64
	// direct is when this replica last heard from the worker itself
	// (registration or heartbeat); while that is recent, this replica is
	// the authority on it and Redis only mirrors it.
	direct time.Time
}

// New returns a registry over c feeding local. Run must be running for
// workers registered elsewhere to appear.
func New(c redis.UniversalClient, local Local, opts Options) (*Registry, error) {
	if c == nil || local == nil {
		return nil, errors.New("cluster: a Redis client and a local registry are required")
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Registry{c: c, local: local, opts: opts, known: map[string]*known{}, disputed: map[string]string{}}, nil
}

func (r *Registry) indexKey() string           { return r.opts.Prefix + "workers" }
func (r *Registry) workerKey(id string) string { return r.opts.Prefix + "w:" + id }
func (r *Registry) disputedKey() string        { return r.opts.Prefix + "disputed" }

// maxDisputeReason bounds a dispute reason read back from Redis.
const maxDisputeReason = 1024

// Dispute takes a worker out of rotation here and, through Redis, on
// every replica (their next Sync applies it): a worker an auditor on one
// replica caught must not keep serving through the others. The hash of
// disputed workers has no expiry, like the local dispute; an operator who
// clears one stops the replicas, removes its field (HDEL PREFIX:disputed
// ID) and starts them. A Redis failure is logged: the dispute
// holds here, and this replica writes it back at its next sync.
func (r *Registry) Dispute(workerID, reason string) {
	reason = truncate(reason, maxDisputeReason)
	r.mu.Lock()
	r.disputed[workerID] = reason
	r.mu.Unlock()
	r.local.Dispute(workerID, reason)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := r.c.HSet(ctx, r.disputedKey(), workerID, reason).Err()
	r.note(err)
	if err != nil {
		r.opts.Logger.Error("dispute not shared with the other replicas", "worker", workerID, "err", err)
	}
}

// maxDisputed bounds the disputed workers read back from Redis: a hash
// longer than that is not what replicas wrote, and is refused whole.
const maxDisputed = 10000

// syncDisputes applies the disputes other replicas recorded and writes
// back this replica's that the hash lacks (one made while Redis was down).
func (r *Registry) syncDisputes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	n, err := r.c.HLen(ctx, r.disputedKey()).Result()
	if err != nil {
		return err
	}
	if n > maxDisputed {
		return fmt.Errorf("%s holds %d disputed workers, more than %d", r.disputedKey(), n, maxDisputed)
	}
	all, err := r.c.HGetAll(ctx, r.disputedKey()).Result()
	if err != nil {
		return err
	}
	var fresh, missing []string
	r.mu.Lock()
	for id, why := range all {
		if _, ok := r.disputed[id]; !ok {
			r.disputed[id] = truncate(why, maxDisputeReason)
			fresh = append(fresh, id)
		}
	}
	var reasons []string
	for id, why := range r.disputed {
		if _, ok := all[id]; !ok {
			missing, reasons = append(missing, id), append(reasons, why)
		}
	}
	r.mu.Unlock()
	for i, id := range missing {
		if err := r.c.HSetNX(ctx, r.disputedKey(), id, reasons[i]).Err(); err != nil {
			return err
		}
		r.opts.Logger.Info("dispute shared after an outage", "worker", id)
	}
	for _, id := range fresh {
		r.local.Dispute(id, truncate(all[id], maxDisputeReason))
		r.opts.Logger.Warn("worker disputed on another replica", "worker", id)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// opTimeout bounds one Redis call made on behalf of a worker's request.
const opTimeout = 2 * time.Second

// Upsert registers a worker here and in Redis. A Redis failure is logged
// and reported by Err; the worker is registered locally regardless, and
// its next heartbeat writes the whole record again.
func (r *Registry) Upsert(w *task.Registered) {
	r.local.Upsert(w)
	now := r.opts.Clock.Now()
	reg := *w
	r.mu.Lock()
	r.known[w.WorkerID] = &known{reg: &reg, direct: now, at: now.UnixMilli()}
	r.mu.Unlock()
	r.write(&reg, nil, now)
}

// Heartbeat records a heartbeat here and in Redis. An unknown worker gets
// the local registry's error (it must register again).
func (r *Registry) Heartbeat(hb *task.Heartbeat) error {
	if err := r.local.Heartbeat(hb); err != nil {
		return err
	}
	now := r.opts.Clock.Now()
	r.mu.Lock()
	k := r.known[hb.WorkerID]
	var reg *task.Registered
	if k != nil {
		cp := *hb
		k.hb, k.direct, k.at, reg = &cp, now, now.UnixMilli(), k.reg
	}
	r.mu.Unlock()
	if reg != nil {
		r.write(reg, hb, now)
	}
	return nil
}

// Remove deregisters a worker here and deletes its record, so every
// replica drops it at its next sync.
func (r *Registry) Remove(workerID string) {
	r.local.Remove(workerID)
	r.mu.Lock()
	delete(r.known, workerID)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.workerKey(workerID))
		p.ZRem(ctx, r.indexKey(), workerID)
		return nil
	})
	r.note(err)
}

// write stores a worker's whole record (registration, last heartbeat,
// beat time) with its TTL.
func (r *Registry) write(reg *task.Registered, hb *task.Heartbeat, now time.Time) {
	rb, err := json.Marshal(reg)
	if err != nil {
		r.opts.Logger.Error("cluster: encode registration", "worker", reg.WorkerID, "err", err)
		return
	}
	var hbb []byte
	if hb != nil {
		if hbb, err = json.Marshal(hb); err != nil {
			r.opts.Logger.Error("cluster: encode heartbeat", "worker", reg.WorkerID, "err", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ms := now.UnixMilli()
	key := r.workerKey(reg.WorkerID)
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "reg", rb, "hb", hbb, "at", ms, "by", r.opts.Replica)
		p.PExpire(ctx, key, r.opts.TTL)
		p.ZAdd(ctx, r.indexKey(), redis.Z{Score: float64(ms), Member: reg.WorkerID})
		return nil
	})
	r.note(err)
}

// note records Redis's health after a call.
func (r *Registry) note(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noteLocked(err)
}

func (r *Registry) noteLocked(err error) {
	switch {
	case err == nil && r.down != nil:
		r.opts.Logger.Info("shared worker registry reachable again")
		r.down = nil
	case err != nil && r.down == nil:
		r.opts.Logger.Warn("shared worker registry unreachable; routing with the workers known so far", "err", err)
		r.down, r.downSince = err, r.opts.Clock.Now()
	case err != nil:
		r.down = err
	}
}

// Err is nil while Redis answers, else the outage (for /readyz).
func (r *Registry) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return fmt.Errorf("shared worker registry unreachable: %w", r.down)
	}
	return nil
}

// VerifySession accepts a worker's session token when the worker's
// registration, on any replica, carries it: a worker behind a load
// balancer may heartbeat to a replica it did not register with.
func (r *Registry) VerifySession(workerID, token string) bool {
	r.mu.Lock()
	k := r.known[workerID]
	r.mu.Unlock()
	return k != nil && token != "" && subtle.ConstantTimeCompare([]byte(k.reg.SessionToken), []byte(token)) == 1
}

// Run syncs from Redis every SyncInterval until ctx ends.
func (r *Registry) Run(ctx context.Context) {
	for {
		r.Sync(ctx)
		done := make(chan struct{})
		t := r.opts.Clock.AfterFunc(r.opts.SyncInterval, func() { close(done) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-done:
		}
	}
}

// record is one worker's record as read from Redis.
type record struct {
	reg *task.Registered
	hb  *task.Heartbeat
	at  int64
}

// Sync reads every live record and brings this replica's scheduler in line:
// new or re-registered workers are upserted, fresh heartbeats applied, and
// workers gone from Redis (and not heard from directly) removed.
func (r *Registry) Sync(ctx context.Context) {
	recs, err := r.read(ctx)
	if err == nil {
		// Disputes first, so a worker never routes here in between; a
		// dispute key that cannot be read does not stop worker records.
		if derr := r.syncDisputes(ctx); derr != nil {
			r.opts.Logger.Error("shared disputes not synced", "key", r.disputedKey(), "err", derr)
		}
	}
	now := r.opts.Clock.Now()
	r.mu.Lock()
	r.noteLocked(err)
	if err != nil {
		refresh := r.outageRefreshLocked(now)
		r.mu.Unlock()
		for _, hb := range refresh {
			r.local.Heartbeat(hb) // a worker the scheduler dropped meanwhile stays dropped
		}
		return
	}
	type op struct {
		upsert *task.Registered
		hb     *task.Heartbeat
		remove string
	}
	var ops []op
	fresh := func(t time.Time) bool { return now.Sub(t) < r.opts.HeartbeatTimeout }
	for id, rec := range recs {
		k := r.known[id]
		if k != nil && fresh(k.direct) {
			continue // this replica hears from it itself
		}
		beat := time.UnixMilli(rec.at)
		if !fresh(beat) {
			continue // silent everywhere: let the scheduler expire it
		}
		if k == nil || k.reg.URL != rec.reg.URL || k.reg.SessionToken != rec.reg.SessionToken {
			k = &known{reg: rec.reg}
			r.known[id] = k
			ops = append(ops, op{upsert: rec.reg})
		}
		if rec.at > k.at {
			k.at = rec.at
			if rec.hb != nil {
				k.hb = rec.hb
				ops = append(ops, op{hb: rec.hb})
			}
		}
	}
	for id, k := range r.known {
		if _, ok := recs[id]; !ok && !fresh(k.direct) {
			delete(r.known, id)
			ops = append(ops, op{remove: id})
		}
	}
	r.mu.Unlock()
	for _, o := range ops {
		switch {
		case o.upsert != nil:
			r.local.Upsert(o.upsert)
			r.opts.Logger.Debug("worker from another replica", "worker", o.upsert.WorkerID, "url", o.upsert.URL)
		case o.hb != nil:
			if err := r.local.Heartbeat(o.hb); err != nil {
				r.opts.Logger.Debug("heartbeat from another replica not applied", "worker", o.hb.WorkerID, "err", err)
			}
		default:
			r.local.Remove(o.remove)
			r.opts.Logger.Info("worker gone from the shared registry", "worker", o.remove)
		}
	}
}

// outageRefreshLocked returns the heartbeats that keep workers learned from
// Redis alive during the first OutageGrace of an outage.
func (r *Registry) outageRefreshLocked(now time.Time) []*task.Heartbeat {
	if now.Sub(r.downSince) >= r.opts.OutageGrace {
		return nil
	}
	var out []*task.Heartbeat
	for id, k := range r.known {
		if now.Sub(k.direct) < r.opts.HeartbeatTimeout {
			continue
		}
		hb := &task.Heartbeat{WorkerID: id, Time: now}
		if k.hb != nil {
			cp := *k.hb
			hb = &cp
		}
		out = append(out, hb)
	}
	return out
}

// read fetches every record whose beat is younger than TTL, pruning older
// index entries (their hashes have expired). Invalid records are skipped
// with a warning: Redis is shared, so what it returns is checked like any
// input.
func (r *Registry) read(ctx context.Context) (map[string]*record, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cutoff := r.opts.Clock.Now().Add(-r.opts.TTL).UnixMilli()
	if err := r.c.ZRemRangeByScore(ctx, r.indexKey(), "-inf", "("+strconv.FormatInt(cutoff, 10)).Err(); err != nil {
		return nil, err
	}
	ids, err := r.c.ZRange(ctx, r.indexKey(), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	if len(ids) > 0 {
		if _, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HMGet(ctx, r.workerKey(id), "reg", "hb", "at")
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	out := make(map[string]*record, len(ids))
	for i, id := range ids {
		rec, err := parseRecord(id, cmds[i].Val())
		if err != nil {
			r.opts.Logger.Warn("shared worker registry: record skipped", "worker", id, "err", err)
			continue
		}
		if rec != nil {
			out[id] = rec
		}
	}
	return out, nil
}

// linkScheme is workers.LinkScheme (this leaf package does not import the
// worker implementation; TestLinkWorkerStaysOnItsReplica checks they agree).
const linkScheme = "link"

// parseRecord validates one record; nil, nil for one that has expired or
// that only the replica holding its worker link can route to.
func parseRecord(id string, v []any) (*record, error) {
	if len(v) != 3 || v[0] == nil {
		return nil, nil
	}
	str := func(x any) string { s, _ := x.(string); return s }
	rec := &record{reg: &task.Registered{}}
	if err := json.Unmarshal([]byte(str(v[0])), rec.reg); err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	if rec.reg.WorkerID != id {
		return nil, fmt.Errorf("registration names worker %q", rec.reg.WorkerID)
	}
	u, err := url.Parse(rec.reg.URL)
	if err == nil && u.Scheme == linkScheme {
		// A worker on an outbound link is reachable only over the session
		// it dialled, which one replica holds: no other may route to it.
		return nil, nil
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("registration URL %q is not http(s)", rec.reg.URL)
	}
	if rec.reg.SessionToken == "" || len(rec.reg.Models) == 0 {
		return nil, errors.New("registration without a session token or models")
	}
	for _, m := range rec.reg.Models {
		if err := task.ValidateModelVersion(m); err != nil {
			return nil, err
		}
	}
	if hb := str(v[1]); hb != "" {
		rec.hb = &task.Heartbeat{}
		if err := json.Unmarshal([]byte(hb), rec.hb); err != nil {
			return nil, fmt.Errorf("heartbeat: %w", err)
		}
		if err := task.ValidateHeartbeat(rec.hb); err != nil || rec.hb.WorkerID != id {
			return nil, fmt.Errorf("heartbeat for %q: %v", rec.hb.WorkerID, err)
		}
	}
	at, err := strconv.ParseInt(str(v[2]), 10, 64)
	if err != nil || at <= 0 {
		return nil, fmt.Errorf("beat time %q", str(v[2]))
	}
	rec.at = at
	return rec, nil
}
