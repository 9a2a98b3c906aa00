package audit

import (
	"context"
	mrand "math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
)

func out(digest, text string, prompt, completion int) *Output {
	return &Output{Completion: task.Completion{ResponseDigest: digest, PromptTokens: prompt, CompletionTokens: completion},
		Text: text, HasText: true}
}

func TestExact(t *testing.T) {
	for _, tc := range []struct {
		name  string
		a, b  *Output
		match bool
		div   int
	}{
		{"equal", out("aa", "x", 3, 4), out("aa", "x", 3, 4), true, -1},
		{"other response", out("aa", "Once upon", 3, 4), out("bb", "Once there", 3, 4), false, 5},
		{"inflated completion tokens", out("aa", "x", 3, 4), out("aa", "x", 3, 9), false, -1},
		{"inflated prompt tokens", out("aa", "x", 30, 4), out("aa", "x", 3, 4), false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Exact{}.Compare(tc.a, tc.b)
			if v.Match != tc.match || v.Divergence != tc.div {
				t.Errorf("Compare = %+v, want match %v divergence %d", v, tc.match, tc.div)
			}
		})
	}
}

func TestPrefix(t *testing.T) {
	long := "Once upon a time, there was a little girl named Lily. She loved to play outside."
	for _, tc := range []struct {
		name  string
		p     Prefix
		a, b  *Output
		match bool
	}{
		{"equal", Prefix{}, out("", long, 1, 20), out("", long, 1, 20), true},
		{"late divergence", Prefix{MinAgree: 32}, out("", long, 1, 20), out("", long[:60]+"inside.", 1, 20), true},
		{"early divergence", Prefix{MinAgree: 32}, out("", long, 1, 20), out("", "Once upon a time, there was a big dog.", 1, 20), false},
		{"short texts agree to the end", Prefix{}, out("", "The end", 1, 2), out("", "The end.", 1, 3), true},
		{"equal text, other token count", Prefix{}, out("", long, 1, 20), out("", long, 1, 25), false},
		{"token skew allowed", Prefix{MaxTokenSkew: 5}, out("", long, 1, 20), out("", long, 1, 25), true},
		{"no text", Prefix{}, &Output{}, out("", long, 1, 20), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := tc.p.Compare(tc.a, tc.b); v.Match != tc.match {
				t.Errorf("Compare = %+v, want match %v", v, tc.match)
			}
		})
	}
}

func TestDivergence(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", -1},
		{"abc", "abc", -1},
		{"abc", "abd", 2},
		{"ab", "abc", 2},
		{"héllo", "hêllo", 1}, // é and ê share their first byte: back to the rune start
		{"", "a", 0},
	} {
		if got := divergence(tc.a, tc.b); got != tc.want {
			t.Errorf("divergence(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func FuzzDivergence(f *testing.F) {
	f.Add("héllo", "hêllo")
	f.Add("abc", "ab")
	f.Fuzz(func(t *testing.T, a, b string) {
		d := divergence(a, b)
		if d < 0 {
			if a != b {
				t.Fatalf("divergence(%q, %q) = -1 for different strings", a, b)
			}
			return
		}
		if d > len(a) || d > len(b) || a[:d] != b[:d] {
			t.Fatalf("divergence(%q, %q) = %d is not a common prefix", a, b, d)
		}
	})
}

// nopPool lets Observe run without a cluster (Observe never uses it).
type nopPool struct{ Pool }

func TestObserve(t *testing.T) {
	greedy := &task.Task{Kind: task.KindChat, Model: "m"}
	seed := int64(7)
	seeded := &task.Task{Kind: task.KindCompletion, Model: "m", Temperature: 0.8, Seed: &seed}
	unseeded := &task.Task{Kind: task.KindCompletion, Model: "m", Temperature: 0.8}
	embed := &task.Task{Kind: task.KindEmbedding, Model: "m"}
	rec := &task.Completion{PromptTokens: 10, CompletionTokens: 10}
	for _, tc := range []struct {
		name       string
		cfg        Config
		task       *task.Task
		finish     string
		n          int
		sampled    uint64
		queued     int
		ineligible uint64
		budget     uint64
		dropped    uint64
	}{
		{name: "greedy, every one", cfg: Config{Rate: 1, MaxShare: 1, Queue: 100}, task: greedy, finish: "stop", n: 50, sampled: 50, queued: 50},
		{name: "seeded", cfg: Config{Rate: 1, MaxShare: 1, Queue: 100}, task: seeded, finish: "length", n: 5, sampled: 5, queued: 5},
		{name: "unseeded sampling is not reproducible", cfg: Config{Rate: 1}, task: unseeded, finish: "stop", n: 5, ineligible: 5},
		{name: "embeddings are not audited", cfg: Config{Rate: 1}, task: embed, finish: "stop", n: 5, ineligible: 5},
		{name: "a request cut short is not audited", cfg: Config{Rate: 1}, task: greedy, finish: "cancelled", n: 5, ineligible: 5},
		{name: "full queue drops and counts", cfg: Config{Rate: 1, MaxShare: 1, Queue: 3}, task: greedy, finish: "stop", n: 10, sampled: 10, queued: 3, dropped: 7},
		// Burst 20 pays for the first audit; then each request of 20
		// tokens earns 2 (10%): one audit per ten requests after it.
		{name: "budget caps the share", cfg: Config{Rate: 1, MaxShare: 0.1, Burst: 20, Queue: 1000}, task: greedy, finish: "stop", n: 100, sampled: 100, queued: 10, budget: 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg, Deps{Pool: nopPool{}, Rand: mrand.NewChaCha8([32]byte{3})})
			if err != nil {
				t.Fatal(err)
			}
			for range tc.n {
				a.Observe("r", tc.task, 10*time.Minute, rec, tc.finish, "", false)
			}
			st := a.Stats()
			if st.Sampled != tc.sampled || len(a.queue) != tc.queued || st.Ineligible != tc.ineligible ||
				st.SkippedBudget != tc.budget || st.Dropped != tc.dropped || st.Observed != uint64(tc.n) {
				t.Errorf("stats %+v, queued %d; want sampled %d queued %d ineligible %d budget %d dropped %d",
					st, len(a.queue), tc.sampled, tc.queued, tc.ineligible, tc.budget, tc.dropped)
			}
		})
	}
}

// TestSampleRate: the fraction sampled follows Rate (seeded, so exact).
func TestSampleRate(t *testing.T) {
	a, err := New(Config{Rate: 0.01, MaxShare: 1, Queue: 100000}, Deps{Pool: nopPool{}, Rand: mrand.NewChaCha8([32]byte{4})})
	if err != nil {
		t.Fatal(err)
	}
	tk := &task.Task{Kind: task.KindChat, Model: "m"}
	for range 100000 {
		a.Observe("r", tk, 10*time.Minute, &task.Completion{}, "stop", "", false)
	}
	if s := a.Stats().Sampled; s < 900 || s > 1100 {
		t.Errorf("sampled %d of 100000 at rate 0.01", s)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want bool
	}{
		{Config{}, true}, {Config{Rate: 1, MaxShare: 1}, true},
		{Config{Rate: -0.1}, false}, {Config{Rate: 1.5}, false}, {Config{MaxShare: 2}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.want {
			t.Errorf("Validate(%+v) = %v", tc.cfg, err)
		}
	}
}

// recordingPool answers every dispatch with a done event and keeps the
// task it was handed, as the re-executing worker would see it.
type recordingPool struct {
	Pool
	got *task.Task
}

func (p *recordingPool) DispatchTo(_ context.Context, _ string, t *task.Task, on func(task.Event) error) error {
	c := *t
	p.got = &c
	return on(task.Event{Type: task.EventDone, Completion: &task.Completion{}, FinishReason: "stop"})
}

// A worker that can tell an audit from traffic behaves only when audited.
// Played here by comparing what the worker is handed for an audit with
// what it was handed for the request itself: the same priority, the same
// streaming, a deadline as far off, and a trace context of the same shape
// (a new one: the original's would link the two). Before, an audit came
// at batch priority, unstreamed, with no trace context and the auditor's
// own 5-minute deadline.
func TestAuditLooksLikeTraffic(t *testing.T) {
	now := time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC)
	clk := clock.NewFake(now)
	pool := &recordingPool{}
	a, err := New(Config{Rate: 1, MaxShare: 1, Queue: 10}, Deps{Pool: pool, Clock: clk, Rand: mrand.NewChaCha8([32]byte{5})})
	if err != nil {
		t.Fatal(err)
	}
	traffic := task.Task{Kind: task.KindChat, Model: "m", RequestID: "req_x", Priority: task.PriorityInteractive, Stream: true,
		Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	j := &job{task: traffic, budget: 10 * time.Minute}
	if _, err := a.execute(context.Background(), j, "w2"); err != nil {
		t.Fatal(err)
	}
	got := pool.got
	if got.Priority != traffic.Priority || got.Stream != traffic.Stream {
		t.Errorf("audit sent priority %v stream %v; the request had %v %v", got.Priority, got.Stream, traffic.Priority, traffic.Stream)
	}
	if d := got.Deadline.Sub(now); d != 10*time.Minute {
		t.Errorf("audit deadline %s off; the request's was 10m off when dispatched", d)
	}
	if !regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`).MatchString(got.Traceparent) || got.Traceparent == traffic.Traceparent {
		t.Errorf("audit traceparent %q; want a fresh one shaped like %q", got.Traceparent, traffic.Traceparent)
	}
	if got.RequestID != traffic.RequestID {
		t.Errorf("request ID %q changed (it is in the digest)", got.RequestID)
	}
	// Without a trace context, none is made up.
	noTrace := traffic
	noTrace.Traceparent = ""
	if _, err := a.execute(context.Background(), &job{task: noTrace, budget: time.Minute}, "w2"); err != nil {
		t.Fatal(err)
	}
	if pool.got.Traceparent != "" || pool.got.Deadline.Sub(now) != time.Minute {
		t.Errorf("audit of an untraced request: traceparent %q, deadline %s off", pool.got.Traceparent, pool.got.Deadline.Sub(now))
	}
}

// threeProviders answers every dispatch with the same text (three honest
// workers of three providers, engines not bit-exact) and counts disputes.
type threeProviders struct {
	Pool
	disputed []string
}

func (p *threeProviders) Peers(string, string) []scheduler.Peer {
	return []scheduler.Peer{{ID: "w1", Provider: "p1", InRotation: true}, {ID: "w2", Provider: "p2", InRotation: true},
		{ID: "w3", Provider: "p3", InRotation: true}}
}

func (p *threeProviders) DispatchTo(_ context.Context, _ string, _ *task.Task, on func(task.Event) error) error {
	if err := on(task.Event{Type: task.EventDelta, Text: "Once upon a time"}); err != nil {
		return err
	}
	return on(task.Event{Type: task.EventDone, Completion: &task.Completion{Model: "m", WorkerID: "x"}, FinishReason: "stop"})
}

func (p *threeProviders) Dispute(workerID, _ string) { p.disputed = append(p.disputed, workerID) }

// A streamed response reaches the auditor without its text (the gateway
// keeps it only for unary answers). With engines that are not bit-exact
// the comparison needs the text: before, the audited worker's answer
// "matched" nothing, the referee agreed with the auditor, and the honest
// audited worker was disputed and taken out of rotation.
func TestAuditWithoutTextNeverDisputes(t *testing.T) {
	pool := &threeProviders{}
	a, err := New(Config{Rate: 1, MaxShare: 1, Queue: 10}, Deps{Pool: pool, Rand: mrand.NewChaCha8([32]byte{6})})
	if err != nil {
		t.Fatal(err)
	}
	j := &job{receiptID: "r", task: task.Task{Kind: task.KindChat, Model: "m", RequestID: "req_y", Stream: true},
		budget: time.Minute, out: Output{Completion: task.Completion{Model: "m", WorkerID: "w1"}, HasText: false}}
	a.audit(context.Background(), j)
	if len(pool.disputed) != 0 {
		t.Fatalf("disputed %v over a response whose text the auditor never had", pool.disputed)
	}
	if st := a.Stats(); st.SkippedNoText != 1 || st.Disputes != 0 {
		t.Errorf("stats %+v: want the audit skipped for want of text", st)
	}
	// With the text, the same honest answers pass.
	j.out.Text, j.out.HasText = "Once upon a time", true
	a.audit(context.Background(), j)
	if st := a.Stats(); st.Passed != 1 || len(pool.disputed) != 0 {
		t.Errorf("stats %+v, disputed %v: want a pass", st, pool.disputed)
	}
}
