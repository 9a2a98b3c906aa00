package batching

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/clock"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type recorder struct {
	frames  [][]string
	expired []string
}

func newTestBatcher(cfg Config, capacity int) (*Batcher[string], *clock.Fake, *recorder) {
	clk := clock.NewFake(t0)
	rec := &recorder{}
	b := New(cfg, capacity, Deps[string]{
		Clock: clk,
		Send: func(frame []*Entry[string]) {
			var names []string
			for _, e := range frame {
				names = append(names, e.Value)
			}
			rec.frames = append(rec.frames, names)
		},
		Expire: func(e *Entry[string]) { rec.expired = append(rec.expired, e.Value) },
	})
	return b, clk, rec
}

// step is one action in a scripted batcher test.
type step struct {
	submit   string // value to submit
	prio     int
	deadline time.Duration // from t0; 0: none
	group    string
	release  string // value to release
	cancel   string
	advance  time.Duration
	wantErr  error
}

func TestBatcher(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		capacity    int
		steps       []step
		wantFrames  [][]string
		wantExpired []string
	}{
		{
			name:       "idle worker: every entry goes out at once, alone",
			capacity:   4,
			steps:      []step{{submit: "a"}, {submit: "b"}, {submit: "c"}},
			wantFrames: [][]string{{"a"}, {"b"}, {"c"}},
		},
		{
			name:     "busy worker: queued entries coalesce when a slot frees",
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "b"}, {submit: "c"},
				{release: "a"},
			},
			wantFrames: [][]string{{"a"}, {"b"}},
		},
		{
			name:     "frees several slots at once: one frame up to max batch",
			cfg:      Config{MaxBatch: 2},
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "b"}, {submit: "c"}, {submit: "d"},
				{advance: time.Millisecond},
			},
			wantFrames: [][]string{{"a"}},
		},
		{
			name:     "priority order: interactive before batch",
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "batch1", prio: 1}, {submit: "inter", prio: 0},
				{release: "a"}, {release: "inter"},
			},
			wantFrames: [][]string{{"a"}, {"inter"}, {"batch1"}},
		},
		{
			name:     "deadline passes in the queue: dropped and reported",
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "late", deadline: 10 * time.Millisecond}, {submit: "b"},
				{advance: 20 * time.Millisecond}, {release: "a"},
			},
			wantFrames:  [][]string{{"a"}, {"b"}},
			wantExpired: []string{"late"},
		},
		{
			name:     "already expired at submit while busy: dropped at once",
			capacity: 1,
			steps: []step{
				{advance: time.Second}, {submit: "a"}, {submit: "old", deadline: time.Millisecond},
			},
			wantFrames:  [][]string{{"a"}},
			wantExpired: []string{"old"},
		},
		{
			name:     "bounded queue refuses the overflow",
			cfg:      Config{MaxQueue: 1},
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "b"}, {submit: "c", wantErr: ErrQueueFull},
			},
			wantFrames: [][]string{{"a"}},
		},
		{
			name:     "cancelled while queued: never sent",
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "b"}, {submit: "c"}, {cancel: "b"}, {release: "a"},
			},
			wantFrames: [][]string{{"a"}, {"c"}},
		},
		{
			name:     "max wait sends overdue entries without a free slot",
			cfg:      Config{MaxWait: 5 * time.Millisecond},
			capacity: 1,
			steps: []step{
				{submit: "a"}, {submit: "b"}, {advance: 2 * time.Millisecond}, {submit: "c"},
				{advance: 3 * time.Millisecond},
			},
			wantFrames: [][]string{{"a"}, {"b"}},
		},
		{
			name:     "embedding group: queued members share one frame and one slot",
			capacity: 1,
			steps: []step{
				{submit: "a"},
				{submit: "e1", group: "emb"}, {submit: "x"}, {submit: "e2", group: "emb"}, {submit: "e3", group: "emb"},
				{release: "a"},
				{release: "e1"}, {release: "e2"}, // slot still held by e3
				{release: "e3"},
			},
			wantFrames: [][]string{{"a"}, {"e1", "e2", "e3"}, {"x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clk, rec := newTestBatcher(tt.cfg, tt.capacity)
			entries := map[string]*Entry[string]{}
			for i, s := range tt.steps {
				switch {
				case s.submit != "":
					e := &Entry[string]{Value: s.submit, Priority: s.prio, Group: s.group}
					if s.deadline > 0 {
						e.Deadline = t0.Add(s.deadline)
					}
					entries[s.submit] = e
					if err := b.Submit(e); !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Submit(%s) = %v, want %v", i, s.submit, err, s.wantErr)
					}
				case s.release != "":
					b.Release(entries[s.release])
				case s.cancel != "":
					if !b.Cancel(entries[s.cancel]) {
						t.Fatalf("step %d: Cancel(%s) = false", i, s.cancel)
					}
				case s.advance > 0:
					clk.Advance(s.advance)
				}
			}
			if d := cmp.Diff(rec.frames, tt.wantFrames); d != "" {
				t.Errorf("frames (-got +want):\n%s", d)
			}
			if d := cmp.Diff(rec.expired, tt.wantExpired); d != "" {
				t.Errorf("expired (-got +want):\n%s", d)
			}
		})
	}
}

func TestBatcherMaxBatchOnRelease(t *testing.T) {
	b, _, rec := newTestBatcher(Config{MaxBatch: 2}, 1)
	es := make([]*Entry[string], 5)
	for i, v := range []string{"a", "b", "c", "d", "e"} {
		es[i] = &Entry[string]{Value: v}
		if err := b.Submit(es[i]); err != nil {
			t.Fatal(err)
		}
	}
	b.SetCapacity(5) // four slots free at once: frames of at most two
	want := [][]string{{"a"}, {"b", "c"}, {"d", "e"}}
	if d := cmp.Diff(rec.frames, want); d != "" {
		t.Errorf("frames (-got +want):\n%s", d)
	}
	st := b.Stats()
	if st.Sent != 5 || st.Frames != 3 || st.Busy != 5 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBatcherClose(t *testing.T) {
	b, _, _ := newTestBatcher(Config{}, 1)
	_ = b.Submit(&Entry[string]{Value: "a"})
	_ = b.Submit(&Entry[string]{Value: "b"})
	left := b.Close()
	if len(left) != 1 || left[0].Value != "b" {
		t.Fatalf("Close returned %v", left)
	}
	if err := b.Submit(&Entry[string]{Value: "c"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close = %v", err)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		q      float64
		want   float64
	}{
		{"empty", nil, 0.5, 0},
		{"single", []float64{0.010}, 0.99, 0.010},
		{"median of 1..100", seq(1, 100), 0.5, 50},
		{"p99 of 1..100", seq(1, 100), 0.99, 99},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Observe(v)
			}
			got := h.Quantile(tt.q)
			if tt.want == 0 && got != 0 || tt.want != 0 && (got < tt.want*0.93 || got > tt.want*1.07) {
				t.Errorf("Quantile(%v) = %v, want ~%v", tt.q, got, tt.want)
			}
		})
	}
}

func seq(lo, hi int) []float64 {
	var out []float64
	for i := lo; i <= hi; i++ {
		out = append(out, float64(i))
	}
	return out
}
