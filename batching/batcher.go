// Package batching is Tollgate's per-worker dynamic batcher. A Batcher sends
// an entry at once while its worker has a free slot, so batching adds no wait
// on an idle path; it coalesces only what queues while the worker is busy,
// in priority order, into frames of at most MaxBatch entries, drops queued
// entries whose deadline passes, and refuses new entries when its bounded
// queue is full (backpressure). Entries that share a Group (embedding inputs
// for one model) travel in one frame and take one slot together, because the
// worker merges them into one engine call.
//
// The batcher knows nothing of HTTP, models or workers: it moves opaque values
// and calls its Send function with each frame. Time comes from an injected
// clock, so every behaviour is tested with clock.Fake and no sleeps.
package batching

import (
	"container/heap"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// ErrQueueFull is returned by Submit when the bounded queue is full.
var ErrQueueFull = errors.New("batching: queue full")

// ErrClosed is returned by Submit after Close.
var ErrClosed = errors.New("batching: closed")

// Config bounds a batcher. Durations are YAML strings such as "5ms".
type Config struct {
	// MaxBatch is the most entries in one frame (default 16).
	MaxBatch int `yaml:"max_batch" json:"max_batch"`
	// MaxWait is the longest an entry is held while the worker is busy;
	// after it the entry goes out in the next frame even without a free slot
	// and the worker's engine queues it. 0 holds it until a slot frees.
	MaxWait time.Duration `yaml:"max_wait" json:"max_wait"`
	// MaxQueue bounds the entries waiting for a slot (default 256).
	MaxQueue int `yaml:"max_queue" json:"max_queue"`
}

// Defaults fills zero fields.
func (c Config) Defaults() Config {
	if c.MaxBatch == 0 {
		c.MaxBatch = 16
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = 256
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MaxBatch < 0:
		return fmt.Errorf("max_batch: must be positive, got %d", c.MaxBatch)
	case c.MaxWait < 0:
		return fmt.Errorf("max_wait: must not be negative, got %s", c.MaxWait)
	case c.MaxQueue < 0:
		return fmt.Errorf("max_queue: must be positive, got %d", c.MaxQueue)
	}
	return nil
}

// Entry is one queued item. The caller sets Value, Priority, Deadline and
// Group before Submit and must not change them afterwards.
type Entry[T any] struct {
	Value T
	// Priority orders the queue: lower goes first (task.PriorityInteractive is 0).
	Priority int
	// Deadline drops the entry from the queue when it passes; zero means none.
	Deadline time.Time
	// Group, when not empty, puts queued entries with the same Group into
	// the same frame sharing one slot (one engine call on the worker).
	Group string

	enqueued time.Time
	sentAt   time.Time
	seq      uint64
	index    int // position in the heap while queued, -1 otherwise
	state    entryState
	slot     *slot
	timer    clock.Timer
}

// Waited is how long the entry waited in the queue before it was sent.
func (e *Entry[T]) Waited() time.Duration { return e.sentAt.Sub(e.enqueued) }

type entryState uint8

const (
	stateNew entryState = iota
	stateQueued
	stateSent
	stateDone
)

// slot is one unit of worker capacity, shared by the members of a group.
type slot struct{ refs int }

// Deps are the batcher's collaborators.
type Deps[T any] struct {
	Clock clock.Clock
	// Send delivers one frame. It is called without the batcher's lock held,
	// from whichever goroutine caused the frame (Submit, Release, a timer),
	// and should hand the frame off quickly.
	Send func(frame []*Entry[T])
	// Expire is told of a queued entry dropped because its deadline passed.
	Expire func(e *Entry[T])
}

// Batcher is one worker's batcher. It is safe for concurrent use.
type Batcher[T any] struct {
	cfg  Config
	deps Deps[T]

	mu       sync.Mutex
	capacity int
	busy     int // slots in use
	queue    entryHeap[T]
	seq      uint64
	closed   bool
	waitT    clock.Timer // MaxWait timer for the oldest queued entry
	waitAt   time.Time

	stats struct {
		sent, expired, rejected, frames uint64
		batchSize, queueWait            Histogram
	}
}

// New returns a batcher for a worker that runs capacity slots at once.
func New[T any](cfg Config, capacity int, deps Deps[T]) *Batcher[T] {
	if capacity < 1 {
		capacity = 1
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	return &Batcher[T]{cfg: cfg.Defaults(), deps: deps, capacity: capacity}
}

// Submit sends e at once when a slot is free and nothing of equal or higher
// priority is waiting; otherwise it queues e. It returns ErrQueueFull when
// the queue is full, and ErrClosed after Close.
func (b *Batcher[T]) Submit(e *Entry[T]) error {
	if e.state != stateNew {
		return errors.New("batching: entry submitted twice")
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	now := b.deps.Clock.Now()
	e.enqueued, e.index = now, -1
	if b.busy < b.capacity && b.queue.Len() == 0 {
		// The idle path: no queue, no timer, no wait.
		e.slot = &slot{refs: 1}
		b.busy++
		b.markSentLocked(e, now)
		b.stats.frames++
		b.stats.batchSize.Observe(1)
		b.mu.Unlock()
		b.deps.Send([]*Entry[T]{e})
		return nil
	}
	if !e.Deadline.IsZero() && !now.Before(e.Deadline) {
		b.stats.expired++
		e.state = stateDone
		b.mu.Unlock()
		if b.deps.Expire != nil {
			b.deps.Expire(e)
		}
		return nil
	}
	if b.queue.Len() >= b.cfg.MaxQueue {
		b.stats.rejected++
		b.mu.Unlock()
		return ErrQueueFull
	}
	b.seq++
	e.seq = b.seq
	e.state = stateQueued
	heap.Push(&b.queue, e)
	if !e.Deadline.IsZero() {
		e.timer = b.deps.Clock.AfterFunc(e.Deadline.Sub(now), func() { b.expire(e) })
	}
	b.armWaitLocked(now)
	frames := b.flushLocked(now, false)
	b.mu.Unlock()
	b.send(frames)
	return nil
}

// Release frees the slot of a sent entry once its task has ended, and sends
// what the freed capacity allows. A group's slot frees with its last member.
// Releasing twice is a no-op.
func (b *Batcher[T]) Release(e *Entry[T]) {
	b.mu.Lock()
	if e.state != stateSent {
		b.mu.Unlock()
		return
	}
	e.state = stateDone
	e.slot.refs--
	if e.slot.refs == 0 {
		b.busy--
	}
	frames := b.flushLocked(b.deps.Clock.Now(), false)
	b.mu.Unlock()
	b.send(frames)
}

// Cancel removes a queued entry and reports whether it was still queued
// (false: it was already sent, expired or cancelled).
func (b *Batcher[T]) Cancel(e *Entry[T]) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.state != stateQueued {
		return false
	}
	b.removeLocked(e)
	return true
}

// SetCapacity changes the worker's slot count (for example after it
// re-registers with another MaxConcurrency) and sends what now fits.
func (b *Batcher[T]) SetCapacity(n int) {
	if n < 1 {
		n = 1
	}
	b.mu.Lock()
	b.capacity = n
	frames := b.flushLocked(b.deps.Clock.Now(), false)
	b.mu.Unlock()
	b.send(frames)
}

// Close refuses new entries and returns the entries still queued, which the
// caller must fail; entries already sent are unaffected.
func (b *Batcher[T]) Close() []*Entry[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	out := make([]*Entry[T], 0, b.queue.Len())
	for b.queue.Len() > 0 {
		e := b.queue[0]
		b.removeLocked(e)
		out = append(out, e)
	}
	return out
}

// Load is the batcher's view of its worker.
type Load struct {
	Capacity int // slots
	Busy     int // slots in use
	Queued   int // entries waiting
}

// Load reports the current load.
func (b *Batcher[T]) Load() Load {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Load{Capacity: b.capacity, Busy: b.busy, Queued: b.queue.Len()}
}

// Stats is a snapshot of a batcher's counters. Wait is in seconds.
type Stats struct {
	Sent      uint64  `json:"sent"`
	Frames    uint64  `json:"frames"`
	Expired   uint64  `json:"expired"`
	Rejected  uint64  `json:"rejected"`
	Queued    int     `json:"queued"`
	Busy      int     `json:"busy"`
	BatchSize Summary `json:"batch_size"`
	QueueWait Summary `json:"queue_wait_seconds"`
}

// Stats snapshots the counters.
func (b *Batcher[T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{
		Sent: b.stats.sent, Frames: b.stats.frames, Expired: b.stats.expired, Rejected: b.stats.rejected,
		Queued: b.queue.Len(), Busy: b.busy,
		BatchSize: b.stats.batchSize.Summary(), QueueWait: b.stats.queueWait.Summary(),
	}
}

func (b *Batcher[T]) send(frames [][]*Entry[T]) {
	for _, f := range frames {
		b.deps.Send(f)
	}
}

func (b *Batcher[T]) markSentLocked(e *Entry[T], now time.Time) {
	e.state = stateSent
	e.sentAt = now
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	b.stats.sent++
	b.stats.queueWait.ObserveDuration(now.Sub(e.enqueued))
}

func (b *Batcher[T]) removeLocked(e *Entry[T]) {
	heap.Remove(&b.queue, e.index)
	e.index = -1
	e.state = stateDone
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// flushLocked forms frames from the head of the queue while slots are free;
// with force (MaxWait passed) it also sends every entry that has waited
// MaxWait, slot or not.
func (b *Batcher[T]) flushLocked(now time.Time, force bool) [][]*Entry[T] {
	var frames [][]*Entry[T]
	for b.queue.Len() > 0 {
		head := b.queue[0]
		overdue := force && b.cfg.MaxWait > 0 && !now.Before(head.enqueued.Add(b.cfg.MaxWait))
		if b.busy >= b.capacity && !overdue {
			break
		}
		frame := make([]*Entry[T], 0, min(b.queue.Len(), b.cfg.MaxBatch))
		groups := map[string]*slot(nil)
		for b.queue.Len() > 0 && len(frame) < b.cfg.MaxBatch {
			e := b.queue[0]
			if e.Group != "" {
				if s, ok := groups[e.Group]; ok {
					b.takeLocked(e, s, now)
					frame = append(frame, e)
					continue
				}
			}
			overdue := force && b.cfg.MaxWait > 0 && !now.Before(e.enqueued.Add(b.cfg.MaxWait))
			if b.busy >= b.capacity && !overdue {
				break
			}
			s := &slot{}
			b.busy++
			b.takeLocked(e, s, now)
			frame = append(frame, e)
			if e.Group != "" {
				if groups == nil {
					groups = map[string]*slot{}
				}
				groups[e.Group] = s
				frame = b.pullGroupLocked(frame, e.Group, s, now)
			}
		}
		if len(frame) == 0 {
			break
		}
		b.stats.frames++
		b.stats.batchSize.Observe(float64(len(frame)))
		frames = append(frames, frame)
	}
	b.armWaitLocked(now)
	return frames
}

// pullGroupLocked moves the other queued members of group into frame, in
// queue order.
func (b *Batcher[T]) pullGroupLocked(frame []*Entry[T], group string, s *slot, now time.Time) []*Entry[T] {
	var members []*Entry[T]
	for _, e := range b.queue {
		if e.Group == group {
			members = append(members, e)
		}
	}
	slices.SortFunc(members, func(x, y *Entry[T]) int {
		if x.Priority != y.Priority {
			return x.Priority - y.Priority
		}
		return int(x.seq - y.seq)
	})
	for _, e := range members {
		if len(frame) >= b.cfg.MaxBatch {
			break
		}
		b.takeLocked(e, s, now)
		frame = append(frame, e)
	}
	return frame
}

func (b *Batcher[T]) takeLocked(e *Entry[T], s *slot, now time.Time) {
	heap.Remove(&b.queue, e.index)
	e.index = -1
	e.slot = s
	s.refs++
	b.markSentLocked(e, now)
}

// armWaitLocked keeps one MaxWait timer for the oldest queued entry.
func (b *Batcher[T]) armWaitLocked(now time.Time) {
	if b.cfg.MaxWait <= 0 || b.queue.Len() == 0 {
		return
	}
	oldest := b.queue[0].enqueued
	for _, e := range b.queue {
		if e.enqueued.Before(oldest) {
			oldest = e.enqueued
		}
	}
	at := oldest.Add(b.cfg.MaxWait)
	if b.waitT != nil && b.waitAt.Equal(at) {
		return
	}
	if b.waitT != nil {
		b.waitT.Stop()
	}
	b.waitAt = at
	b.waitT = b.deps.Clock.AfterFunc(max(at.Sub(now), 0), b.onMaxWait)
}

func (b *Batcher[T]) onMaxWait() {
	b.mu.Lock()
	b.waitT = nil
	frames := b.flushLocked(b.deps.Clock.Now(), true)
	b.mu.Unlock()
	b.send(frames)
}

func (b *Batcher[T]) expire(e *Entry[T]) {
	b.mu.Lock()
	if e.state != stateQueued {
		b.mu.Unlock()
		return
	}
	e.timer = nil
	b.removeLocked(e)
	b.stats.expired++
	b.mu.Unlock()
	if b.deps.Expire != nil {
		b.deps.Expire(e)
	}
}

// entryHeap orders by priority, then arrival.
type entryHeap[T any] []*Entry[T]

func (h entryHeap[T]) Len() int { return len(h) }
func (h entryHeap[T]) Less(i, j int) bool {
	if h[i].Priority != h[j].Priority {
		return h[i].Priority < h[j].Priority
	}
	return h[i].seq < h[j].seq
}
func (h entryHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entryHeap[T]) Push(x any) {
	e := x.(*Entry[T])
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap[T]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
