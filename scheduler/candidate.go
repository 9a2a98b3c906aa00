package scheduler

import (
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// epoch is the origin of monoNanos.
var epoch = time.Now()

// monoNanos is t in nanoseconds since the process started, read from the
// monotonic clock when t has a reading of it (times from clock.Real do):
// heartbeat expiry and ejection must not move when the wall clock is
// stepped (an NTP correction on a loaded VM took every worker out of
// rotation at once). Times without a monotonic reading (fake clocks) use
// their wall time, consistently.
func monoNanos(t time.Time) int64 { return int64(t.Sub(epoch)) }

// Candidate is the scheduler's live view of one registered worker, as
// filters and scorers see it. All fields are guarded by the scheduler's
// lock; plugins run with it held and only read.
type Candidate struct {
	// What every cycle reads comes first, together, for the cache.
	beatNs   int64   // last heartbeat (or registration), in monoNanos
	ejectNs  int64   // out of rotation until then, in monoNanos; 0: never ejected
	slots    int     // tasks the worker runs at once
	waiting  int     // the engine's waiting queue in the last heartbeat
	pressure float64 // memory pressure from the last heartbeat, see memoryPressure
	hbSeen   bool
	draining bool
	disputed bool   // an audit caught it: out of rotation until an operator clears it
	hash     uint64 // of id, for rendezvous hashing
	models   []task.ModelVersion
	// Tracked by the scheduler itself between heartbeats.
	assigned       int // tasks placed here and not ended (queued + in flight)
	assignedTokens int // their estimated remaining work in tokens (prompt + output)
	latency        latencyModel

	id           string
	reg          task.Registered
	conn         Conn
	batcher      *batching.Batcher[*attempt]
	joined       time.Time
	lastBeat     time.Time
	hb           task.Heartbeat
	failures     int       // consecutive failures, for back-off
	ejectedUntil time.Time // out of rotation until then
	served       uint64
	failed       uint64
}

// ID is the worker's ID.
func (c *Candidate) ID() string { return c.id }

// healthy reports whether the worker may get new work at now (Unix ns).
func (c *Candidate) healthy(now int64, timeout time.Duration) bool {
	return now-c.beatNs <= int64(timeout) && !c.draining && !c.disputed && !c.ejected(now)
}

func (c *Candidate) ejected(now int64) bool { return c.ejectNs != 0 && now < c.ejectNs }

// stale reports whether its telemetry is too old to trust at now (Unix ns).
func (c *Candidate) stale(now int64, after time.Duration) bool {
	return !c.hbSeen || now-c.beatNs > int64(after)
}

func (c *Candidate) setBeat(now time.Time) {
	c.lastBeat, c.beatNs = now, monoNanos(now)
}

func (c *Candidate) setEjected(until time.Time) {
	c.ejectedUntil, c.ejectNs = until, monoNanos(until)
}

// load is assigned tasks per slot.
func (c *Candidate) load() float64 { return float64(c.assigned) / float64(c.slots) }

// queued is the tasks assigned beyond the worker's slots.
func (c *Candidate) queued() int { return max(c.assigned-c.slots, 0) }

// latencyModel learns a worker's speed online from observed tasks:
//
//	TTFT ≈ overhead + perToken × prompt tokens   (time from send to first event)
//	ITL  ≈ interToken                            (time per generated token after the first)
//
// Each observation moves the estimate by alpha (an EWMA). A TTFT
// observation is split between the two prefill terms in proportion to
// their current share of the prediction, so both stay positive and long
// prompts teach the per-token term while short ones teach the overhead.
type latencyModel struct {
	overhead, perToken, interToken float64 // seconds
	samples                        int
}

func (m *latencyModel) prefill(promptTokens int) float64 {
	return m.overhead + m.perToken*float64(promptTokens)
}

func (m *latencyModel) observeTTFT(alpha float64, promptTokens int, ttft time.Duration) {
	obs := ttft.Seconds()
	pred := m.prefill(promptTokens)
	if pred <= 0 || obs <= 0 {
		return
	}
	ratio := obs / pred
	share := m.overhead / pred
	m.overhead *= 1 + alpha*(ratio-1)*share
	m.perToken *= 1 + alpha*(ratio-1)*(1-share)
	m.samples++
}

func (m *latencyModel) observeITL(alpha float64, itl time.Duration) {
	if itl <= 0 {
		return
	}
	m.interToken += alpha * (itl.Seconds() - m.interToken)
}

// fnv64a is FNV-1a: deterministic across processes, so placement by
// affinity repeats exactly for the same workers and prompts.
type fnv64a uint64

const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

func newFNV() fnv64a { return fnvOffset }

func (h *fnv64a) writeString(s string) {
	x := uint64(*h)
	for i := 0; i < len(s); i++ {
		x ^= uint64(s[i])
		x *= fnvPrime
	}
	*h = fnv64a(x)
}

func hashString(s string) uint64 {
	h := newFNV()
	h.writeString(s)
	return mix64(uint64(h))
}
