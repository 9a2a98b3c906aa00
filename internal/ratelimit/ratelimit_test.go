package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/internal/redistest"
)

var t0 = time.Unix(1800000000, 0)

type limiterKind struct {
	name string
	new  func(t testing.TB, r Rate) Limiter
}

func limiterKinds() []limiterKind {
	return []limiterKind{
		{"local", func(t testing.TB, r Rate) Limiter {
			l, err := NewLocal(r)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
		{"redis", func(t testing.TB, r Rate) Limiter {
			rd := redistest.New(t)
			l, err := NewRedis(rd.Client, rd.Prefix+"rl:", r)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
	}
}

// step is one Allow call at t0+at and its expected decision.
type step struct {
	key  string
	cost int64
	at   time.Duration
	want Decision
}

func TestLimiters(t *testing.T) {
	rate := Rate{Limit: 10, Period: 10 * time.Second} // 1 per second
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst up to the limit", []step{
			{"k", 4, 0, Decision{Allowed: true, Remaining: 6}},
			{"k", 6, 0, Decision{Allowed: true, Remaining: 0}},
			{"k", 1, 0, Decision{RetryAfter: time.Second}},
		}},
		{"refused call spends nothing", []step{
			{"k", 8, 0, Decision{Allowed: true, Remaining: 2}},
			{"k", 5, 0, Decision{Remaining: 2, RetryAfter: 3 * time.Second}},
			{"k", 2, 0, Decision{Allowed: true, Remaining: 0}},
		}},
		{"refills with time, capped at the limit", []step{
			{"k", 10, 0, Decision{Allowed: true, Remaining: 0}},
			{"k", 3, 3 * time.Second, Decision{Allowed: true, Remaining: 0}},
			{"k", 0, time.Hour, Decision{Allowed: true, Remaining: 10}},
		}},
		{"partial refill gives the exact wait", []step{
			{"k", 10, 0, Decision{Allowed: true, Remaining: 0}},
			{"k", 2, 1500 * time.Millisecond, Decision{Remaining: 1, RetryAfter: 500 * time.Millisecond}},
		}},
		{"clock going backwards refills nothing", []step{
			{"k", 10, 5 * time.Second, Decision{Allowed: true, Remaining: 0}},
			{"k", 1, 0, Decision{RetryAfter: time.Second}},
		}},
		{"cost above the limit never fits", []step{
			{"k", 11, 0, Decision{Remaining: 10, RetryAfter: 10 * time.Second}},
		}},
		{"keys are independent", []step{
			{"a", 10, 0, Decision{Allowed: true, Remaining: 0}},
			{"b", 10, 0, Decision{Allowed: true, Remaining: 0}},
		}},
	}
	for _, k := range limiterKinds() {
		t.Run(k.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					l := k.new(t, rate)
					for i, s := range tc.steps {
						got, err := l.Allow(context.Background(), s.key, s.cost, t0.Add(s.at))
						if err != nil {
							t.Fatal(err)
						}
						if diff := cmp.Diff(got, s.want); diff != "" {
							t.Errorf("step %d (-got +want):\n%s", i, diff)
						}
					}
				})
			}
			t.Run("negative cost", func(t *testing.T) {
				if _, err := k.new(t, rate).Allow(context.Background(), "k", -1, t0); err == nil {
					t.Error("negative cost accepted")
				}
			})
		})
	}
}

func TestRateValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate Rate
		ok   bool
	}{
		{"per minute", PerMinute(60), true},
		{"zero limit", Rate{Limit: 0, Period: time.Minute}, false},
		{"zero period", Rate{Limit: 5}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rate.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// Two replicas (two limiters on one Redis) and 16 goroutines make a fixed
// number of attempts on one key over a one-minute window of a controlled
// clock: attempt k happens at t0 + k·window/attempts. The bucket starts
// full and refills at the limit per minute, so what may be allowed is
// limit (burst) + limit (one minute's refill); concurrency may reorder
// attempts but must never let more through, nor lose more than 1%.
func TestRedisAccuracyAcrossReplicas(t *testing.T) {
	rd := redistest.New(t)
	const limit, attempts, goroutines = 1000, 6000, 16
	window := time.Minute
	replicas := make([]Limiter, 2)
	for i := range replicas {
		c := redis.NewClient(&redis.Options{Addr: rd.Client.Options().Addr, DB: rd.Client.Options().DB})
		t.Cleanup(func() { c.Close() })
		var err error
		if replicas[i], err = NewRedis(c, rd.Prefix+"rl:", PerMinute(limit)); err != nil {
			t.Fatal(err)
		}
	}
	var next, allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			l := replicas[g%2]
			for {
				k := next.Add(1) - 1
				if k >= attempts {
					return
				}
				now := t0.Add(time.Duration(k) * window / attempts)
				d, err := l.Allow(context.Background(), "key_1", 1, now)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	want := float64(limit) + float64(limit)*float64(window)/float64(time.Minute)
	got := float64(allowed.Load())
	t.Logf("allowed %d of %d attempts, limit allows %.0f: error %.3f%%", allowed.Load(), attempts, want, 100*(got-want)/want)
	if got > want || got < 0.99*want {
		t.Errorf("allowed %.0f, want within 1%% below %.0f", got, want)
	}
}

func TestFallback(t *testing.T) {
	srv := redistest.Start(t)
	opts, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries, opts.DialerRetries = -1, 1
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	shared, err := NewRedis(c, "{rl}:", Rate{Limit: 2, Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	local, err := NewLocal(Rate{Limit: 1, Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	f := NewFallback(shared, local, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	allow := func(when string, want bool) {
		t.Helper()
		d, err := f.Allow(ctx, "k", 1, t0)
		if err != nil || d.Allowed != want {
			t.Errorf("%s: allowed %v, %v; want %v", when, d.Allowed, err, want)
		}
	}

	allow("redis up", true)
	if f.Err() != nil {
		t.Errorf("Err while healthy: %v", f.Err())
	}
	srv.Stop()
	allow("redis down, local bucket", true)
	allow("redis down, local bucket empty", false)
	if f.Err() == nil {
		t.Error("Err is nil while Redis is down")
	}
	srv.Restart(t) // empty again: persistence is off
	allow("redis back", true)
	if f.Err() != nil {
		t.Errorf("Err after recovery: %v", f.Err())
	}
	out := logs.String()
	if n := strings.Count(out, "unavailable"); n != 1 {
		t.Errorf("%d outage warnings, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "recovered"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
	// A bad call is the caller's error, not an outage.
	if _, err := f.Allow(ctx, "k", -1, t0); err == nil || f.Err() != nil {
		t.Errorf("negative cost: err %v, outage %v", err, f.Err())
	}
}

func TestLocalForgetsIdleKeys(t *testing.T) {
	l, err := NewLocal(Rate{Limit: 1, Period: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		if _, err := l.Allow(context.Background(), fmt.Sprint(i), 1, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(l.buckets); n > 1024 {
		t.Errorf("%d buckets kept for 3000 keys used once a second apart", n)
	}
}

// BenchmarkAllow measures decisions per second, one key, 32 goroutines.
func BenchmarkAllow(b *testing.B) {
	for _, k := range limiterKinds() {
		b.Run(k.name, func(b *testing.B) {
			l := k.new(b, PerMinute(1<<40))
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					now := t0.Add(time.Duration(n.Add(1)) * time.Microsecond)
					if _, err := l.Allow(context.Background(), "key_1", 1, now); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestDebit checks the after-the-fact charge: it spends past zero, and
// Allow then refuses everything, a zero cost included, until the debt has
// refilled.
func TestDebit(t *testing.T) {
	rate := Rate{Limit: 10, Period: 10 * time.Second} // 1 per second
	type op struct {
		debit int64 // > 0: Debit this much; else Allow(cost)
		cost  int64
		at    time.Duration
		want  Decision
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"debit within the bucket", []op{
			{debit: 4},
			{cost: 0, want: Decision{Allowed: true, Remaining: 6}},
		}},
		{"debt refuses a zero cost until refilled", []op{
			{debit: 13},
			{cost: 0, at: time.Second, want: Decision{Remaining: -2, RetryAfter: 2 * time.Second}},
			{cost: 0, at: 3 * time.Second, want: Decision{Allowed: true, Remaining: 0}},
		}},
	}
	for _, k := range limiterKinds() {
		t.Run(k.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					l := k.new(t, rate)
					for i, o := range tc.ops {
						if o.debit > 0 {
							if err := l.Debit(context.Background(), "k", o.debit, t0.Add(o.at)); err != nil {
								t.Fatal(err)
							}
							continue
						}
						got, err := l.Allow(context.Background(), "k", o.cost, t0.Add(o.at))
						if err != nil {
							t.Fatal(err)
						}
						if diff := cmp.Diff(got, o.want); diff != "" {
							t.Errorf("op %d (-got +want):\n%s", i, diff)
						}
					}
				})
			}
		})
	}
}
