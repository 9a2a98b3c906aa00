package sched

import (
	"container/heap"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// VirtualClock is a discrete-event clock: time stands still until Run moves
// it to the next pending timer and fires it. With the scheduler's callback
// path (scheduler.StartConn) and the simulated workers, a whole bench run
// advances on it in one goroutine, fast and deterministic.
type VirtualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers timerHeap
	seq    uint64
}

var _ clock.Clock = (*VirtualClock)(nil)

// NewVirtualClock starts at start.
func NewVirtualClock(start time.Time) *VirtualClock { return &VirtualClock{now: start} }

// Now is the virtual time.
func (c *VirtualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d (at once for d ≤ 0, on the next Run step).
func (c *VirtualClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &vtimer{c: c, at: c.now.Add(max(d, 0)), seq: c.seq, f: f, index: -1}
	heap.Push(&c.timers, t)
	return t
}

// Run fires pending timers in time order until none is left or the next is
// after until, and returns the number fired. Time ends at the last fired
// timer (or until, if it ran out of timers before).
func (c *VirtualClock) Run(until time.Time) int {
	n := 0
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].at.After(until) {
			if len(c.timers) > 0 || c.now.Before(until) {
				c.now = until
			}
			c.mu.Unlock()
			return n
		}
		t := heap.Pop(&c.timers).(*vtimer)
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		n++
		t.f()
	}
}

// Pending is the number of timers waiting.
func (c *VirtualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type vtimer struct {
	c     *VirtualClock
	at    time.Time
	seq   uint64
	f     func()
	index int
}

func (t *vtimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.index)
	return true
}

type timerHeap []*vtimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*vtimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
