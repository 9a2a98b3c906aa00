package sched

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestVirtualClock(t *testing.T) {
	tests := []struct {
		name  string
		at    []time.Duration
		stop  []int // indexes stopped before running
		until time.Duration
		want  []int
	}{
		{"fires in time order", []time.Duration{30, 10, 20}, nil, 100, []int{1, 2, 0}},
		{"equal times keep scheduling order", []time.Duration{10, 10, 10}, nil, 100, []int{0, 1, 2}},
		{"stopped timers never fire", []time.Duration{10, 20, 30}, []int{1}, 100, []int{0, 2}},
		{"stops at until", []time.Duration{10, 20, 30}, nil, 25, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewVirtualClock(t0)
			var got []int
			timers := make([]interface{ Stop() bool }, len(tt.at))
			for i, d := range tt.at {
				timers[i] = c.AfterFunc(d, func() { got = append(got, i) })
			}
			for _, i := range tt.stop {
				if !timers[i].Stop() {
					t.Fatalf("Stop(%d) = false", i)
				}
			}
			c.Run(t0.Add(tt.until))
			if d := cmp.Diff(got, tt.want); d != "" {
				t.Errorf("(-got +want):\n%s", d)
			}
			if !c.Now().Equal(t0.Add(tt.until)) {
				t.Errorf("Now = %v, want until", c.Now().Sub(t0))
			}
		})
	}
}

func TestSimWorkerFollowsProfile(t *testing.T) {
	p := sim.Profiles()["llama3-8b-a100"]
	clk := NewVirtualClock(t0)
	w := NewSimWorker("w", p, clk, 1)
	var first, done time.Time
	var tokens int
	b := &task.Batch{ID: "b", Tasks: []task.Task{{PromptTokensHint: 1000, MaxTokens: 101}}}
	w.Start(b, func(ev task.Event) {
		if first.IsZero() {
			first = clk.Now()
		}
		tokens += ev.Tokens
		if ev.Type == task.EventDone {
			done = clk.Now()
		}
	}, func(error) {})
	clk.Run(t0.Add(time.Minute))
	ttft := first.Sub(t0)
	wantTTFT := p.PrefillOverhead + 1000*p.PrefillPerToken // one running sequence: load factor 1
	if lo, hi := scale(wantTTFT, 1-p.JitterMax), scale(wantTTFT, 1+p.JitterMax); ttft < lo || ttft > hi {
		t.Errorf("TTFT %s outside %s..%s", ttft, lo, hi)
	}
	decode := done.Sub(first)
	wantDecode := 100 * p.InterTokenLatency
	if lo, hi := scale(wantDecode, 1-p.JitterMax), scale(wantDecode, 1+p.JitterMax); decode < lo || decode > hi {
		t.Errorf("decode %s outside %s..%s", decode, lo, hi)
	}
	if tokens != 101 {
		t.Errorf("tokens = %d, want 101", tokens)
	}
}

func scale(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }

func TestSimWorkerQueueAndRefusal(t *testing.T) {
	p := sim.Profiles()["sim-tiny"]
	p.MaxNumSeqs, p.MaxWaiting = 1, 1
	clk := NewVirtualClock(t0)
	w := NewSimWorker("w", p, clk, 1)
	var failed []int
	var ended bool
	b := &task.Batch{ID: "b", Tasks: []task.Task{{MaxTokens: 4}, {MaxTokens: 4}, {MaxTokens: 4}}}
	w.Start(b, func(ev task.Event) {
		if ev.Type == task.EventFailed {
			failed = append(failed, ev.Error.Status)
		}
	}, func(error) { ended = true })
	if got := w.Load(); got.Running != 1 || got.Waiting != 1 {
		t.Errorf("load = %+v, want 1 running, 1 waiting", got)
	}
	clk.Run(t0.Add(time.Minute))
	if d := cmp.Diff(failed, []int{429}); d != "" || !ended {
		t.Errorf("refusals (-got +want):\n%s (ended=%v)", d, ended)
	}
}

// TestRunShort is a 5 s bench at 90% load: it is deterministic, and the
// tollgate policy beats round-robin on p99 TTFT.
func TestRunShort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Duration = 5 * time.Second
	cfg.Loads = []float64{0.9}
	a, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	strip := func(r *Result) []PolicyResult {
		out := append([]PolicyResult(nil), r.Loads[0].Policies...)
		for i := range out {
			out[i].WallMs, out[i].DecisionUs = 0, 0
		}
		return out
	}
	if d := cmp.Diff(strip(a), strip(b)); d != "" {
		t.Fatalf("two runs differ (-first +second):\n%s", d)
	}
	by := map[string]PolicyResult{}
	for _, p := range a.Loads[0].Policies {
		by[p.Policy] = p
		if p.Completed+p.Shed+p.Failed != p.Requests || p.Requests == 0 {
			t.Errorf("%s: %d completed + %d shed + %d failed != %d requests", p.Policy, p.Completed, p.Shed, p.Failed, p.Requests)
		}
	}
	if tg, rr := by[scheduler.PolicyTollgate], by[scheduler.PolicyRoundRobin]; tg.TTFTP99 >= rr.TTFTP99 {
		t.Errorf("tollgate p99 TTFT %.0f ms not below round-robin's %.0f ms", tg.TTFTP99, rr.TTFTP99)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"default is valid", func(*Config) {}, ""},
		{"unknown profile", func(c *Config) { c.Workers[0].Profile = "tpu" }, "workers[0].profile"},
		{"unknown slow worker", func(c *Config) { c.SlowWorker = "nope" }, "slow_worker"},
		{"load out of range", func(c *Config) { c.Loads = []float64{3} }, "loads[0]"},
		{"unknown policy", func(c *Config) { c.Policies = []string{"random"} }, "policies[0]"},
		{"too short", func(c *Config) { c.Duration = time.Millisecond }, "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestWritePlots(t *testing.T) {
	res := &Result{Config: DefaultConfig(), CapacityRPS: 40, Loads: []LoadResult{
		{Load: 0.7, Policies: []PolicyResult{{Policy: "tollgate", TTFTP99: 300, Goodput: 25}, {Policy: "round-robin", TTFTP99: 900, Goodput: 20}}},
		{Load: 0.9, Policies: []PolicyResult{{Policy: "tollgate", TTFTP99: 600, Goodput: 30}, {Policy: "round-robin", TTFTP99: 4000, Goodput: 15}}},
	}}
	dir := t.TempDir()
	files, err := WritePlots(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG", f)
		}
	}
	if _, err := WritePlots(dir, &Result{}); err != ErrNoLoads {
		t.Errorf("no loads: %v", err)
	}
}

// TestRunWithAudits: injected audits run on another worker at priority
// batch, and the token bucket keeps their work at most about the share
// (a rate far above the share leaves most samples skipped); without audits
// nothing is injected.
func TestRunWithAudits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Duration = 5 * time.Second
	cfg.Loads = []float64{0.7}
	cfg.Policies = []string{scheduler.PolicyTollgate}
	cfg.AuditRate, cfg.AuditShare = 0.5, 0.05
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Loads[0].Policies[0]
	if p.AuditsDone == 0 || p.AuditsSkipped == 0 || p.AuditsDone > p.Audits {
		t.Fatalf("audits %d started, %d done, %d skipped", p.Audits, p.AuditsDone, p.AuditsSkipped)
	}
	// The bucket starts empty and is capped, so the share stays near the
	// cap: one audit's worth of tokens above it at most.
	if p.AuditShare <= 0 || p.AuditShare > 0.06 {
		t.Errorf("audit share %.4f, cap 0.05", p.AuditShare)
	}
	cfg.AuditRate = 0
	res, err = Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Loads[0].Policies[0]; p.Audits != 0 || p.AuditShare != 0 {
		t.Errorf("audits without a rate: %+v", p)
	}
}
