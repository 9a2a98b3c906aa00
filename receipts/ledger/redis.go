package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/receipts"
)

// RedisStore is the Store shared by several gateway replicas and provers
// (issue 9). It keeps the same semantics as BoltStore: entries ordered by
// Seq, group-committed appends, AssignBatch atomic and failing if any
// receipt is no longer pending, FinishBatch idempotent.
//
// Layout, every key under Prefix (which carries a hash tag, "{tollgate}:"
// by default, so that all keys share one Redis Cluster slot and the Lua
// scripts may touch them together):
//
//	e:<receipt ID>  hash {j: entry JSON, s: seq, b: batch seq, i: leaf index, u: subject seq,
//	                w: worker ID, r: pending reason, f: failure (Entry.PendingReason, Failure)}
//	rq:<request ID> string, the receipt ID recording that request (one per request)
//	order           sorted set, member receipt ID, score seq (export order)
//	s:<subject>     sorted set, member receipt ID, score subject seq (a key's own export)
//	sseq:<subject>  counter (INCR) of a subject's entries
//	pending         sorted set, receipts not yet in a batch, score seq
//	pw:<worker ID>  sorted set, the same pool by worker (PendingFor)
//	pworkers        set of worker IDs whose pw: set may be non-empty
//	recut           sorted set of re-cut batch seqs (ReviveBatch may reopen them)
//	indexed         "2" once rq: and pw: cover every entry (OpenRedis backfills)
//	seq, bseq       counters (INCR) for entry and batch sequences
//	b:<batch seq>   string, batch JSON
//	open            sorted set of batch seqs neither proven nor failed
//	meta            hash of named values
//	count:proven, count:failed  receipts in finished batches (Counts)
//	count:void      void receipts (never batched)
//	jobs            stream of assigned batches, the proving queue (see Queue)
//
// Every multi-key write is one Lua script (EVALSHA), which Redis runs
// atomically; each script checks everything before it writes anything, so
// a refused write changes nothing. Seq is exact below 2^53 (sorted-set
// scores are doubles).
//
// Durability: a write returns once Redis has acknowledged it, and what that
// acknowledgement is worth depends on the server's persistence settings,
// not on this code:
//   - appendonly yes + appendfsync always (recommended for the ledger): Redis
//     fsyncs the AOF before replying, so a Redis crash or restart loses no
//     acknowledged receipt, the same guarantee as BoltStore.
//   - appendonly yes + appendfsync everysec (Redis's default AOF setting): a
//     crash of the Redis host (not just the process) can lose up to about
//     one second of acknowledged receipts.
//   - RDB snapshots only, or no persistence: everything since the last
//     snapshot (or everything) is lost on restart.
//
// Throughput (`go test -bench Append -benchtime 2s ./receipts/ledger/`,
// 2-core dev box shared with other work, Redis 7.0 on localhost): with
// appendfsync always, 0.31 ms per append one at a time and 0.056 ms per
// append with 64 concurrent writers (~17,900/s); BoltStore in the same run,
// 0.39 ms and 0.025 ms. Earlier runs on a busier box measured 0.66/0.077 ms
// and 1.5/0.045 ms: compare within one run only.
//
// Replication is asynchronous: a failover to a replica can lose writes the
// old primary acknowledged. Redis 7.0 has no WAITAOF, so this store cannot
// ask for replica fsync; run the ledger on a primary with appendfsync always.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	own    bool // Close closes c

	appends chan *appendReq
	quit    chan struct{}
	stopped chan struct{}
	closed  chan struct{}
	once    sync.Once
}

var _ Store = (*RedisStore)(nil)

// RedisOptions configures OpenRedis.
type RedisOptions struct {
	// Prefix is put before every key; default "{tollgate}:ledger:". Keep a
	// hash tag ({...}) in it when running on Redis Cluster.
	Prefix string
	// Client, if set, is used instead of dialing url (and not closed by
	// Close).
	Client redis.UniversalClient
}

// DefaultRedisPrefix is the key prefix used when RedisOptions.Prefix is empty.
const DefaultRedisPrefix = "{tollgate}:ledger:"

// OpenRedis connects to the Redis at url (redis://[user:pass@]host:port/db
// or rediss:// for TLS), checks that it answers, and returns the store.
func OpenRedis(ctx context.Context, url string, opts RedisOptions) (*RedisStore, error) {
	c, own := opts.Client, false
	if c == nil {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("ledger: redis url: %w", err)
		}
		c, own = redis.NewClient(o), true
	}
	if err := c.Ping(ctx).Err(); err != nil {
		if own {
			c.Close()
		}
		return nil, fmt.Errorf("ledger: redis: %w", err)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	s := &RedisStore{c: c, prefix: prefix, own: own, appends: make(chan *appendReq, maxGroup),
		quit: make(chan struct{}), stopped: make(chan struct{}), closed: make(chan struct{})}
	if err := s.backfillIndexes(ctx); err != nil {
		if own {
			c.Close()
		}
		return nil, err
	}
	go s.commitLoop()
	return s, nil
}

func (s *RedisStore) entryKey(id string) string { return s.prefix + "e:" + id }
func (s *RedisStore) batchKey(seq uint64) string {
	return s.prefix + "b:" + strconv.FormatUint(seq, 10)
}

// appendScript stores a group of append requests. ARGV: prefix, number of
// requests, then per request its entry count followed by (id, entry JSON,
// batch seq, index, subject, kind, request ID, worker ID) per entry, kind
// "v" for a void entry (never pending, its request ID not indexed) and "r"
// otherwise. It returns, per request, an array of the Seq of its first
// entry followed by each entry's subject seq (0 without a subject); or 0 if
// one of its receipt IDs is already taken or repeated within the request,
// or -2 if one of its request IDs is (that request alone fails, as in
// BoltStore).
var appendScript = redis.NewScript(`
local p = ARGV[1]
local nreq = tonumber(ARGV[2])
local pos = 3
local W = 8
local taken, takenReq = {}, {}
local out = {}
for r = 1, nreq do
  local n = tonumber(ARGV[pos])
  local code = 1
  local mine, mineReq = {}, {}
  for k = 0, n - 1 do
    local at = pos + 1 + W * k
    local id, kind, rq = ARGV[at], ARGV[at + 5], ARGV[at + 6]
    if kind == 'v' then rq = '' end
    if taken[id] or mine[id] or redis.call('EXISTS', p .. 'e:' .. id) == 1 then code = 0
    elseif rq ~= '' and (takenReq[rq] or mineReq[rq] or redis.call('EXISTS', p .. 'rq:' .. rq) == 1) then code = -2 end
    mine[id] = true
    if rq ~= '' then mineReq[rq] = true end
  end
  if code == 1 then
    local res = {}
    for k = 0, n - 1 do
      local at = pos + 1 + W * k
      local id, bseq, sub, kind, rq, w = ARGV[at], ARGV[at + 2], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
      if kind == 'v' then rq = '' end
      taken[id] = true
      if rq ~= '' then takenReq[rq] = true end
      local seq = redis.call('INCR', p .. 'seq')
      if k == 0 then res[1] = seq end
      local u = 0
      if sub ~= '' then
        u = redis.call('INCR', p .. 'sseq:' .. sub)
        redis.call('ZADD', p .. 's:' .. sub, u, id)
      end
      res[k + 2] = u
      redis.call('HSET', p .. 'e:' .. id, 'j', ARGV[at + 1], 's', seq, 'b', bseq, 'i', ARGV[at + 3], 'u', u, 'w', w)
      redis.call('ZADD', p .. 'order', seq, id)
      if rq ~= '' then redis.call('SET', p .. 'rq:' .. rq, id) end
      if kind == 'v' then
        redis.call('INCR', p .. 'count:void')
      elseif bseq == '0' then
        redis.call('ZADD', p .. 'pending', seq, id)
        redis.call('ZADD', p .. 'pw:' .. w, seq, id)
        redis.call('SADD', p .. 'pworkers', w)
      end
    end
    if n == 0 then res[1] = -1 end
    out[r] = res
  else
    out[r] = code
  end
  pos = pos + 1 + W * n
end
return out
`)

// assignScript: ARGV prefix, batch JSON, worker ID, receipt IDs... Returns
// the batch seq, or an error naming the first receipt that is not pending.
// The batch goes onto the proving queue (XADD jobs) in the same script, so
// every open batch has a job and no job names a batch that was not stored.
var assignScript = redis.NewScript(`
local p = ARGV[1]
for k = 4, #ARGV do
  if not redis.call('ZSCORE', p .. 'pending', ARGV[k]) then
    return redis.error_reply('not pending: ' .. ARGV[k])
  end
end
local seq = redis.call('INCR', p .. 'bseq')
for k = 4, #ARGV do
  local e = p .. 'e:' .. ARGV[k]
  redis.call('HSET', e, 'b', seq, 'i', k - 4)
  redis.call('HDEL', e, 'r')
  redis.call('ZREM', p .. 'pending', ARGV[k])
  local w = redis.call('HGET', e, 'w') or ARGV[3]
  redis.call('ZREM', p .. 'pw:' .. w, ARGV[k])
  if redis.call('ZCARD', p .. 'pw:' .. w) == 0 then redis.call('SREM', p .. 'pworkers', w) end
end
redis.call('SET', p .. 'b:' .. seq, ARGV[2])
redis.call('ZADD', p .. 'open', seq, seq)
redis.call('XADD', p .. 'jobs', '*', 'batch', seq)
return seq
`)

// recutScript: ARGV prefix, batch seq, batch JSON (status recut), worker
// ID, reason, then (receipt ID, failure) pairs; an empty failure sends the
// receipt back to the pool. Returns the number failed, or an error if the
// batch is not open.
var recutScript = redis.NewScript(`
local p = ARGV[1]
local seq = ARGV[2]
if not redis.call('ZSCORE', p .. 'open', seq) then return redis.error_reply('not open') end
local w = ARGV[4]
local failed = 0
for k = 6, #ARGV, 2 do
  local e = p .. 'e:' .. ARGV[k]
  local f = ARGV[k + 1]
  redis.call('HSET', e, 'b', 0, 'i', 0)
  if f ~= '' then
    redis.call('HSET', e, 'f', f)
    redis.call('HDEL', e, 'r')
    failed = failed + 1
  else
    local s = redis.call('HGET', e, 's')
    local ew = redis.call('HGET', e, 'w') or w
    redis.call('HSET', e, 'r', ARGV[5])
    redis.call('ZADD', p .. 'pending', s, ARGV[k])
    redis.call('ZADD', p .. 'pw:' .. ew, s, ARGV[k])
    redis.call('SADD', p .. 'pworkers', ew)
  end
end
redis.call('SET', p .. 'b:' .. seq, ARGV[3])
redis.call('ZREM', p .. 'open', seq)
redis.call('ZADD', p .. 'recut', seq, seq)
if failed > 0 then redis.call('INCRBY', p .. 'count:failed', failed) end
return failed
`)

// reviveScript: ARGV prefix, batch seq, batch JSON (status pending),
// worker ID, receipt IDs in leaf order. Returns the seq, or an error if the
// batch is not re-cut or a receipt is not pending. The batch is queued
// again (XADD jobs).
var reviveScript = redis.NewScript(`
local p = ARGV[1]
local seq = ARGV[2]
if not redis.call('ZSCORE', p .. 'recut', seq) then return redis.error_reply('not recut') end
for k = 5, #ARGV do
  if not redis.call('ZSCORE', p .. 'pending', ARGV[k]) then
    return redis.error_reply('not pending: ' .. ARGV[k])
  end
end
for k = 5, #ARGV do
  local e = p .. 'e:' .. ARGV[k]
  redis.call('HSET', e, 'b', seq, 'i', k - 5)
  redis.call('HDEL', e, 'r')
  redis.call('ZREM', p .. 'pending', ARGV[k])
  local w = redis.call('HGET', e, 'w') or ARGV[4]
  redis.call('ZREM', p .. 'pw:' .. w, ARGV[k])
  if redis.call('ZCARD', p .. 'pw:' .. w) == 0 then redis.call('SREM', p .. 'pworkers', w) end
end
redis.call('SET', p .. 'b:' .. seq, ARGV[3])
redis.call('ZREM', p .. 'recut', seq)
redis.call('ZADD', p .. 'open', seq, seq)
redis.call('XADD', p .. 'jobs', '*', 'batch', seq)
return seq
`)

// updateScript: ARGV prefix, batch seq, batch JSON: store it if the batch
// is still open.
var updateScript = redis.NewScript(`
if not redis.call('ZSCORE', ARGV[1] .. 'open', ARGV[2]) then return 0 end
redis.call('SET', ARGV[1] .. 'b:' .. ARGV[2], ARGV[3])
return 1
`)

// finishScript: ARGV prefix, batch seq, batch JSON, counter ("proven" or
// "failed"), receipt count. Returns 1 if stored, 0 if the batch was already
// finished.
var finishScript = redis.NewScript(`
local p = ARGV[1]
if not redis.call('ZSCORE', p .. 'open', ARGV[2]) then return 0 end
redis.call('SET', p .. 'b:' .. ARGV[2], ARGV[3])
redis.call('ZREM', p .. 'open', ARGV[2])
redis.call('INCRBY', p .. 'count:' .. ARGV[4], ARGV[5])
return 1
`)

// Append queues entries for the committer and returns once Redis has
// acknowledged them. Concurrent appends are group-committed: while one
// script runs, the next group gathers, so an idle store adds no wait and a
// busy one shares each round trip (and, with appendfsync always, each AOF
// fsync) among many receipts.
func (s *RedisStore) Append(ctx context.Context, entries []*Entry) error {
	return enqueueAppend(ctx, s.appends, s.quit, s.closed, entries)
}

func (s *RedisStore) commitLoop() {
	defer close(s.stopped)
	runGroupCommit(s.appends, s.quit, s.commit)
}

// commit writes a group with one script call. The committer is not tied to
// any caller's context: once queued, an append is finished or failed by
// Redis, never abandoned half way.
func (s *RedisStore) commit(group []*appendReq) {
	fail := func(err error) {
		for _, r := range group {
			r.done <- err
		}
	}
	args := []any{s.prefix, len(group)}
	for _, r := range group {
		args = append(args, len(r.entries))
		for _, e := range r.entries {
			stored := *e
			stored.Seq, stored.BatchSeq, stored.Index, stored.SubjectSeq, stored.PendingReason, stored.Failure = 0, 0, 0, 0, "", ""
			v, err := json.Marshal(&stored)
			if err != nil {
				fail(fmt.Errorf("ledger: encode entry %s: %w", e.ID, err))
				return
			}
			kind := "r"
			if e.Void != nil {
				kind = "v"
			}
			args = append(args, e.ID, v, e.BatchSeq, e.Index, e.Subject(), kind, requestID(e), string(workerOf(e)))
		}
	}
	res, err := appendScript.Run(context.Background(), s.c, nil, args...).Slice()
	if err == nil && len(res) != len(group) {
		err = fmt.Errorf("ledger: redis append returned %d results for %d requests", len(res), len(group))
	}
	if err != nil {
		fail(fmt.Errorf("ledger: redis append: %w", err))
		return
	}
	for gi, r := range group {
		seqs, ok := res[gi].([]any)
		if !ok {
			if code, _ := res[gi].(int64); code == -2 {
				r.done <- fmt.Errorf("%w: receipt %s", ErrDuplicateRequest, dupID(r.entries))
			} else {
				r.done <- fmt.Errorf("%w: %s", ErrDuplicate, dupID(r.entries))
			}
			continue
		}
		if len(r.entries) == 0 {
			r.done <- nil
			continue
		}
		if len(seqs) != len(r.entries)+1 {
			r.done <- fmt.Errorf("ledger: redis append returned %d seqs for %d entries", len(seqs)-1, len(r.entries))
			continue
		}
		first, _ := seqs[0].(int64)
		for k, e := range r.entries {
			u, _ := seqs[k+1].(int64)
			e.Seq, e.SubjectSeq = uint64(first)+uint64(k), uint64(u)
		}
		r.done <- nil
	}
}

// dupID names the request's receipt IDs for the duplicate error (the script
// does not say which one collided).
func dupID(entries []*Entry) string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	return strings.Join(ids, ",")
}

// entryFields are the hash fields decodeEntry reads, in its order ("u" is
// absent from entries recorded before the per-subject index).
var entryFields = []string{"j", "s", "b", "i", "u", "r", "f"}

// decodeEntry rebuilds an entry from its hash fields (entryFields).
func decodeEntry(id string, h []any) (*Entry, error) {
	if len(h) != len(entryFields) || h[0] == nil {
		return nil, fmt.Errorf("ledger: receipt %s missing", id)
	}
	var e Entry
	if err := json.Unmarshal([]byte(h[0].(string)), &e); err != nil {
		return nil, fmt.Errorf("ledger: entry %s: %w", id, err)
	}
	var err error
	num := func(v any) uint64 {
		str, _ := v.(string)
		n, perr := strconv.ParseUint(str, 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("ledger: entry %s: bad field %q", id, str)
		}
		return n
	}
	e.Seq, e.BatchSeq, e.Index = num(h[1]), num(h[2]), int(num(h[3]))
	if h[4] != nil {
		e.SubjectSeq = num(h[4])
	}
	e.PendingReason, _ = h[5].(string)
	e.Failure, _ = h[6].(string)
	return &e, err
}

// entries reads entries by receipt ID in one round trip; a missing one is
// an error.
func (s *RedisStore) entries(ctx context.Context, ids []string) ([]*Entry, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.entryKey(id), entryFields...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	out := make([]*Entry, len(ids))
	for i, c := range cmds {
		if out[i], err = decodeEntry(ids[i], c.Val()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// batches reads batches by seq in one round trip; a missing one is an error.
func (s *RedisStore) batches(ctx context.Context, seqs []uint64) ([]*Batch, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(seqs))
	for i, seq := range seqs {
		keys[i] = s.batchKey(seq)
	}
	vals, err := s.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	out := make([]*Batch, len(seqs))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("ledger: batch %d missing", seqs[i])
		}
		var b Batch
		if err := json.Unmarshal([]byte(str), &b); err != nil {
			return nil, fmt.Errorf("ledger: batch %d: %w", seqs[i], err)
		}
		b.Seq = seqs[i]
		out[i] = &b
	}
	return out, nil
}

// withBatches reads the batches the entries belong to.
func (s *RedisStore) withBatches(ctx context.Context, es []*Entry) (map[uint64]*Batch, error) {
	var seqs []uint64
	seen := map[uint64]bool{}
	for _, e := range es {
		if e.BatchSeq != 0 && !seen[e.BatchSeq] {
			seen[e.BatchSeq] = true
			seqs = append(seqs, e.BatchSeq)
		}
	}
	bs, err := s.batches(ctx, seqs)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]*Batch, len(bs))
	for _, b := range bs {
		out[b.Seq] = b
	}
	return out, nil
}

func (s *RedisStore) Get(ctx context.Context, id string) (*Entry, *Batch, error) {
	h, err := s.c.HMGet(ctx, s.entryKey(id), entryFields...).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	if len(h) == 0 || h[0] == nil {
		return nil, nil, apierr.NotFound("id", "receipt_not_found", "no receipt %q", id)
	}
	e, err := decodeEntry(id, h)
	if err != nil || e.BatchSeq == 0 {
		return e, nil, err
	}
	bs, err := s.batches(ctx, []uint64{e.BatchSeq})
	if err != nil {
		return nil, nil, err
	}
	return e, bs[0], nil
}

func (s *RedisStore) List(ctx context.Context, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	if limit <= 0 {
		return nil, map[uint64]*Batch{}, nil
	}
	ids, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.prefix + "order", ByScore: true,
		Start: "(" + strconv.FormatUint(after, 10), Stop: "+inf", Count: int64(limit)}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	es, err := s.entries(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	bs, err := s.withBatches(ctx, es)
	return es, bs, err
}

// ListSubject reads the subject's sorted set (s:<subject>) from after+1.
// Entries recorded before the per-subject index are not in it: they are
// listed only by List (a billing or admin export).
func (s *RedisStore) ListSubject(ctx context.Context, subject string, after uint64, limit int) ([]*Entry, map[uint64]*Batch, error) {
	if limit <= 0 || subject == "" {
		return nil, map[uint64]*Batch{}, nil
	}
	ids, err := s.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.prefix + "s:" + subject, ByScore: true,
		Start: "(" + strconv.FormatUint(after, 10), Stop: "+inf", Count: int64(limit)}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	es, err := s.entries(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	bs, err := s.withBatches(ctx, es)
	return es, bs, err
}

// Entries returns entries by receipt ID, in the order asked.
func (s *RedisStore) Entries(ctx context.Context, ids []string) ([]*Entry, error) {
	out, err := s.entries(ctx, ids)
	if out == nil && err == nil {
		out = []*Entry{}
	}
	return out, err
}

func (s *RedisStore) Pending(ctx context.Context) ([]*Entry, error) {
	ids, err := s.c.ZRange(ctx, s.prefix+"pending", 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	es, err := s.entries(ctx, ids)
	if err != nil {
		return nil, err
	}
	// A batch assigned between the two reads took some of them: leave those
	// out, as a snapshot would have.
	out := es[:0]
	for _, e := range es {
		if e.BatchSeq == 0 && e.Failure == "" {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func (s *RedisStore) AssignBatch(ctx context.Context, b *Batch) error {
	stored := *b
	stored.Seq, stored.Status = 0, receipts.StatusPending
	v, err := json.Marshal(&stored)
	if err != nil {
		return fmt.Errorf("ledger: encode batch: %w", err)
	}
	args := make([]any, 0, 3+len(b.Receipts))
	args = append(args, s.prefix, v, b.WorkerID)
	for _, id := range b.Receipts {
		args = append(args, id)
	}
	seq, err := assignScript.Run(ctx, s.c, nil, args...).Uint64()
	if err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), "not pending: "); ok {
			return fmt.Errorf("%w: receipt %s", ErrNotPending, msg)
		}
		return fmt.Errorf("ledger: redis assign batch: %w", err)
	}
	b.Seq, b.Status = seq, receipts.StatusPending
	return nil
}

func (s *RedisStore) PendingWorkers(ctx context.Context) ([]string, error) {
	ws, err := s.c.SMembers(ctx, s.prefix+"pworkers").Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	sort.Strings(ws)
	return ws, nil
}

// PendingFor reads the worker's pool. An index member whose entry has been
// batched meanwhile (or by a backfill racing a batch) is skipped and
// dropped from the index.
func (s *RedisStore) PendingFor(ctx context.Context, workerID string, limit int) ([]*Entry, error) {
	if limit <= 0 {
		return nil, nil
	}
	key := s.prefix + "pw:" + workerID
	ids, err := s.c.ZRange(ctx, key, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	es, err := s.entries(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*Entry, 0, len(es))
	var stale []any
	for _, e := range es {
		if e.BatchSeq == 0 && e.Failure == "" {
			out = append(out, e)
		} else {
			stale = append(stale, e.ID)
		}
	}
	if len(stale) > 0 {
		// Only entries no longer pending are dropped: a concurrent assign
		// has already removed them, so this races nothing.
		s.c.ZRem(ctx, key, stale...)
	}
	return out, nil
}

func (s *RedisStore) UpdateBatch(ctx context.Context, b *Batch) error {
	stored := *b
	stored.Status = receipts.StatusPending
	v, err := json.Marshal(&stored)
	if err != nil {
		return fmt.Errorf("ledger: encode batch: %w", err)
	}
	if err := updateScript.Run(ctx, s.c, nil, s.prefix, b.Seq, v).Err(); err != nil {
		return fmt.Errorf("ledger: redis update batch: %w", err)
	}
	return nil
}

func (s *RedisStore) RecutBatch(ctx context.Context, b *Batch, reason string, failed map[string]string) error {
	stored := *b
	stored.Status, stored.Error = StatusRecut, reason
	v, err := json.Marshal(&stored)
	if err != nil {
		return fmt.Errorf("ledger: encode batch: %w", err)
	}
	args := make([]any, 0, 5+2*len(b.Receipts))
	args = append(args, s.prefix, b.Seq, v, b.WorkerID, reason)
	for _, id := range b.Receipts {
		args = append(args, id, failed[id])
	}
	if err := recutScript.Run(ctx, s.c, nil, args...).Err(); err != nil {
		if strings.Contains(err.Error(), "not open") {
			return fmt.Errorf("%w: batch %d", ErrNotOpen, b.Seq)
		}
		return fmt.Errorf("ledger: redis recut batch: %w", err)
	}
	return nil
}

func (s *RedisStore) GetBatch(ctx context.Context, seq uint64) (*Batch, error) {
	v, err := s.c.Get(ctx, s.batchKey(seq)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %d", ErrNoBatch, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	var b Batch
	if err := json.Unmarshal([]byte(v), &b); err != nil {
		return nil, fmt.Errorf("ledger: batch %d: %w", seq, err)
	}
	b.Seq = seq
	return &b, nil
}

func (s *RedisStore) ReviveBatch(ctx context.Context, seq uint64) (*Batch, error) {
	b, err := s.GetBatch(ctx, seq)
	if err != nil {
		return nil, err
	}
	if b.Status != StatusRecut {
		return nil, fmt.Errorf("%w: batch %d is %s, not re-cut", ErrNotOpen, seq, b.Status)
	}
	b.Status, b.Error = receipts.StatusPending, ""
	b.OfferedAt, b.Attempts, b.PendingReason = time.Time{}, 0, ""
	stored := *b
	stored.Seq = 0
	v, err := json.Marshal(&stored)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode batch: %w", err)
	}
	args := make([]any, 0, 4+len(b.Receipts))
	args = append(args, s.prefix, seq, v, b.WorkerID)
	for _, id := range b.Receipts {
		args = append(args, id)
	}
	if err := reviveScript.Run(ctx, s.c, nil, args...).Err(); err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), "not pending: "); ok {
			return nil, fmt.Errorf("%w: receipt %s", ErrNotPending, msg)
		}
		if strings.Contains(err.Error(), "not recut") {
			return nil, fmt.Errorf("%w: batch %d is not re-cut", ErrNotOpen, seq)
		}
		return nil, fmt.Errorf("ledger: redis revive batch: %w", err)
	}
	return b, nil
}

// indexVersion marks a ledger whose rq: and pw: indexes cover every entry.
const indexVersion = "2"

// backfillIndexes builds the request-ID and per-worker pending indexes of
// a ledger written before they existed (once; every step is idempotent,
// so replicas opening it at the same time do no harm).
func (s *RedisStore) backfillIndexes(ctx context.Context) error {
	if v, err := s.c.Get(ctx, s.prefix+"indexed").Result(); err == nil && v == indexVersion {
		return nil
	} else if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("ledger: redis: %w", err)
	}
	const chunk = 1000
	for _, set := range []string{"order", "pending"} {
		for start := int64(0); ; start += chunk {
			ids, err := s.c.ZRange(ctx, s.prefix+set, start, start+chunk-1).Result()
			if err != nil {
				return fmt.Errorf("ledger: redis backfill: %w", err)
			}
			es, err := s.entries(ctx, ids)
			if err != nil {
				return err
			}
			_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, e := range es {
					if set == "order" {
						if rq := requestID(e); rq != "" {
							p.SetNX(ctx, s.prefix+"rq:"+rq, e.ID, 0)
						}
					} else if e.BatchSeq == 0 {
						w := string(workerOf(e))
						p.HSet(ctx, s.entryKey(e.ID), "w", w)
						p.ZAdd(ctx, s.prefix+"pw:"+w, redis.Z{Score: float64(e.Seq), Member: e.ID})
						p.SAdd(ctx, s.prefix+"pworkers", w)
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("ledger: redis backfill: %w", err)
			}
			if len(ids) < chunk {
				break
			}
		}
	}
	return s.c.Set(ctx, s.prefix+"indexed", indexVersion, 0).Err()
}

func (s *RedisStore) OpenBatches(ctx context.Context) ([]*Batch, error) {
	members, err := s.c.ZRange(ctx, s.prefix+"open", 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	seqs := make([]uint64, len(members))
	for i, m := range members {
		if seqs[i], err = strconv.ParseUint(m, 10, 64); err != nil {
			return nil, fmt.Errorf("ledger: open batch %q: %w", m, err)
		}
	}
	return s.batches(ctx, seqs)
}

func (s *RedisStore) FinishBatch(ctx context.Context, b *Batch) error {
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("ledger: encode batch: %w", err)
	}
	counter := "failed"
	if b.Status == receipts.StatusProven {
		counter = "proven"
	}
	if err := finishScript.Run(ctx, s.c, nil, s.prefix, b.Seq, v, counter, len(b.Receipts)).Err(); err != nil {
		return fmt.Errorf("ledger: redis finish batch: %w", err)
	}
	return nil
}

var _ Counter = (*RedisStore)(nil)

// Counts reads the counters kept by FinishBatch and the entry sequence, in
// one round trip.
func (s *RedisStore) Counts(ctx context.Context) (Counts, error) {
	vals, err := s.c.MGet(ctx, s.prefix+"seq", s.prefix+"count:proven", s.prefix+"count:failed", s.prefix+"count:void").Result()
	if err != nil {
		return Counts{}, fmt.Errorf("ledger counts: redis: %w", err)
	}
	n := make([]int64, len(vals))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			if n[i], err = strconv.ParseInt(str, 10, 64); err != nil {
				return Counts{}, fmt.Errorf("ledger counts: %w", err)
			}
		}
	}
	return Counts{Pending: n[0] - n[1] - n[2] - n[3], Proven: n[1], Failed: n[2], Void: n[3]}, nil
}

// Meta returns nil (no error) for an unknown key, like BoltStore.
func (s *RedisStore) Meta(ctx context.Context, k string) ([]byte, error) {
	v, err := s.c.HGet(ctx, s.prefix+"meta", k).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: redis read: %w", err)
	}
	return v, nil
}

func (s *RedisStore) PutMeta(ctx context.Context, k string, v []byte) error {
	if err := s.c.HSet(ctx, s.prefix+"meta", k, v).Err(); err != nil {
		return fmt.Errorf("ledger: redis write: %w", err)
	}
	return nil
}

// swapMetaScript sets a meta field only if it still holds ARGV[2]
// (ARGV[3] = "1": only if it is absent).
var swapMetaScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
`)

// SwapMeta writes v under k if k still holds old (nil: absent), atomically
// across every process sharing the Redis.
func (s *RedisStore) SwapMeta(ctx context.Context, k string, old, v []byte) (bool, error) {
	absent := "0"
	if old == nil {
		absent = "1"
	}
	n, err := swapMetaScript.Run(ctx, s.c, []string{s.prefix + "meta"}, k, old, absent, v).Int()
	if err != nil {
		return false, fmt.Errorf("ledger: redis write: %w", err)
	}
	return n == 1, nil
}

// Close stops the committer (queued appends fail with errClosed) and, if
// OpenRedis dialed the client, closes it. Safe to call more than once.
func (s *RedisStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		<-s.stopped
		failQueued(s.appends)
		if s.own {
			err = s.c.Close()
		}
		close(s.closed)
	})
	return err
}
