package batching

import (
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// FuzzBatcherInvariants drives a batcher with an arbitrary sequence of
// operations and checks after each: slots in use never exceed capacity
// (no MaxWait), every entry is in exactly one state, and each is sent,
// expired or cancelled at most once.
func FuzzBatcherInvariants(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 3, 0, 4, 1, 1, 1})
	f.Add([]byte{0x10, 0x21, 0x30, 0x41, 0x53, 0x02, 0x14, 0x25})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := clock.NewFake(t0)
		sent := map[*Entry[int]]int{}
		expired := map[*Entry[int]]int{}
		var b *Batcher[int]
		b = New(Config{MaxBatch: 3, MaxQueue: 4}, 2, Deps[int]{
			Clock: clk,
			Send: func(frame []*Entry[int]) {
				if len(frame) == 0 || len(frame) > 3 {
					t.Fatalf("frame of %d", len(frame))
				}
				for _, e := range frame {
					sent[e]++
				}
			},
			Expire: func(e *Entry[int]) { expired[e]++ },
		})
		var all []*Entry[int]
		cancelled := map[*Entry[int]]int{}
		shrunk := false
		for i, op := range ops {
			arg := int(op >> 4)
			switch op & 7 {
			case 0, 5: // submit
				e := &Entry[int]{Value: i, Priority: arg & 1}
				if arg&2 != 0 {
					e.Deadline = clk.Now().Add(time.Duration(arg) * time.Millisecond)
				}
				if arg&4 != 0 {
					e.Group = "g"
				}
				if err := b.Submit(e); err == nil {
					all = append(all, e)
				}
			case 1, 6: // release one sent entry
				for _, e := range all {
					if e.state == stateSent {
						b.Release(e)
						break
					}
				}
			case 2: // cancel the arg-th entry
				if len(all) > 0 {
					e := all[arg%len(all)]
					if b.Cancel(e) {
						cancelled[e]++
					}
				}
			case 3:
				clk.Advance(time.Duration(arg) * time.Millisecond)
			case 4:
				b.SetCapacity(1 + arg%3)
			}
			l := b.Load()
			if op&7 == 4 {
				shrunk = true // busy may exceed a shrunk capacity until tasks end
			}
			if l.Busy > l.Capacity && !shrunk {
				t.Fatalf("%d slots busy of %d", l.Busy, l.Capacity)
			}
			for _, e := range all {
				if sent[e]+expired[e]+cancelled[e] > 1 {
					t.Fatalf("entry %d ended %d/%d/%d times (sent/expired/cancelled)", e.Value, sent[e], expired[e], cancelled[e])
				}
				if (e.state == stateQueued) != (sent[e]+expired[e]+cancelled[e] == 0) {
					t.Fatalf("entry %d in state %d but sent=%d expired=%d cancelled=%d", e.Value, e.state, sent[e], expired[e], cancelled[e])
				}
			}
			if l.Queued > 4 {
				t.Fatalf("queue %d beyond its bound", l.Queued)
			}
		}
	})
}
