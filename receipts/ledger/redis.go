package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

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
//	e:<receipt ID>  hash {j: entry JSON, s: seq, b: batch seq, i: leaf index, u: subject seq}
//	order           sorted set, member receipt ID, score seq (export order)
//	s:<subject>     sorted set, member receipt ID, score subject seq (a key's own export)
//	sseq:<subject>  counter (INCR) of a subject's entries
//	pending         sorted set, receipts not yet in a batch, score seq
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
	go s.commitLoop()
	return s, nil
}

func (s *RedisStore) entryKey(id string) string { return s.prefix + "e:" + id }
func (s *RedisStore) batchKey(seq uint64) string {
	return s.prefix + "b:" + strconv.FormatUint(seq, 10)
}

// appendScript stores a group of append requests. ARGV: prefix, number of
// requests, then per request its entry count followed by (id, entry JSON,
// batch seq, index, subject, kind) per entry, kind "v" for a void entry
// (never pending) and "r" otherwise. It returns, per request, an array of
// the Seq of its first entry followed by each entry's subject seq (0
// without a subject), or 0 if one of its receipt IDs is already taken or
// repeated within the request (that request alone fails, as in BoltStore).
var appendScript = redis.NewScript(`
local p = ARGV[1]
local nreq = tonumber(ARGV[2])
local pos = 3
local taken = {}
local out = {}
for r = 1, nreq do
  local n = tonumber(ARGV[pos])
  local ok = true
  local mine = {}
  for k = 0, n - 1 do
    local id = ARGV[pos + 1 + 6 * k]
    if taken[id] or mine[id] or redis.call('EXISTS', p .. 'e:' .. id) == 1 then ok = false end
    mine[id] = true
  end
  if ok then
    local res = {}
    for k = 0, n - 1 do
      local at = pos + 1 + 6 * k
      local id, bseq, sub, kind = ARGV[at], ARGV[at + 2], ARGV[at + 4], ARGV[at + 5]
      taken[id] = true
      local seq = redis.call('INCR', p .. 'seq')
      if k == 0 then res[1] = seq end
      local u = 0
      if sub ~= '' then
        u = redis.call('INCR', p .. 'sseq:' .. sub)
        redis.call('ZADD', p .. 's:' .. sub, u, id)
      end
      res[k + 2] = u
      redis.call('HSET', p .. 'e:' .. id, 'j', ARGV[at + 1], 's', seq, 'b', bseq, 'i', ARGV[at + 3], 'u', u)
      redis.call('ZADD', p .. 'order', seq, id)
      if kind == 'v' then
        redis.call('INCR', p .. 'count:void')
      elseif bseq == '0' then
        redis.call('ZADD', p .. 'pending', seq, id)
      end
    end
    if n == 0 then res[1] = -1 end
    out[r] = res
  else
    out[r] = 0
  end
  pos = pos + 1 + 6 * n
end
return out
`)

// assignScript: ARGV prefix, batch JSON, receipt IDs... Returns the batch
// seq, or an error naming the first receipt that is not pending. The batch
// goes onto the proving queue (XADD jobs) in the same script, so every open
// batch has a job and no job names a batch that was not stored.
var assignScript = redis.NewScript(`
local p = ARGV[1]
for k = 3, #ARGV do
  if not redis.call('ZSCORE', p .. 'pending', ARGV[k]) then
    return redis.error_reply('not pending: ' .. ARGV[k])
  end
end
local seq = redis.call('INCR', p .. 'bseq')
for k = 3, #ARGV do
  redis.call('HSET', p .. 'e:' .. ARGV[k], 'b', seq, 'i', k - 3)
  redis.call('ZREM', p .. 'pending', ARGV[k])
end
redis.call('SET', p .. 'b:' .. seq, ARGV[2])
redis.call('ZADD', p .. 'open', seq, seq)
redis.call('XADD', p .. 'jobs', '*', 'batch', seq)
return seq
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
			stored.Seq, stored.BatchSeq, stored.Index, stored.SubjectSeq = 0, 0, 0, 0
			v, err := json.Marshal(&stored)
			if err != nil {
				fail(fmt.Errorf("ledger: encode entry %s: %w", e.ID, err))
				return
			}
			kind := "r"
			if e.Void != nil {
				kind = "v"
			}
			args = append(args, e.ID, v, e.BatchSeq, e.Index, e.Subject(), kind)
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
			r.done <- fmt.Errorf("%w: %s", ErrDuplicate, dupID(r.entries))
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

// entryFields are the hash fields of an entry, in decodeEntry's order.
var entryFields = []string{"j", "s", "b", "i", "u"}

// decodeEntry rebuilds an entry from its hash fields (entryFields; "u" is
// absent from entries recorded before the per-subject index).
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
		if e.BatchSeq == 0 {
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
	args := make([]any, 0, 2+len(b.Receipts))
	args = append(args, s.prefix, v)
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
		for {
			select {
			case r := <-s.appends:
				r.done <- errClosed
				continue
			default:
			}
			break
		}
		if s.own {
			err = s.c.Close()
		}
		close(s.closed)
	})
	return err
}
