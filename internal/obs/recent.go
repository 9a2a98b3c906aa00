package obs

import (
	"slices"
	"sync"
	"time"
)

// recentCap is how many inference requests Recent remembers.
const recentCap = 4096

// Recent remembers the last inference requests (up to 4096) for the status
// page's "recent rate and latency". Observe is a mutex and a slot write, so
// it runs whether metrics are on or off. A nil *Recent is valid and empty.
type Recent struct {
	mu   sync.Mutex
	ring [recentCap]recentReq
	next int
	n    int
}

type recentReq struct {
	end       time.Time
	dur, ttft time.Duration
	failed    bool
}

// RecentSummary is the traffic that ended within a window.
type RecentSummary struct {
	Window     time.Duration
	Requests   int
	RatePerSec float64
	ErrorRate  float64 // 0..1
	LatencyP50 time.Duration
	LatencyP95 time.Duration
	TTFTP50    time.Duration // over requests that produced a token
	TTFTP95    time.Duration
}

// Observe records one finished inference request.
func (r *Recent) Observe(end time.Time, dur, ttft time.Duration, failed bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.ring[r.next] = recentReq{end: end, dur: dur, ttft: ttft, failed: failed}
	r.next = (r.next + 1) % recentCap
	r.n = min(r.n+1, recentCap)
	r.mu.Unlock()
}

// Summary summarises the requests that ended in (now-window, now]. When
// the ring holds fewer than the window's traffic, the rate is computed
// over the span the ring covers.
func (r *Recent) Summary(now time.Time, window time.Duration) RecentSummary {
	s := RecentSummary{Window: window}
	if r == nil || window <= 0 {
		return s
	}
	var durs, ttfts []time.Duration
	failed := 0
	oldest := now
	r.mu.Lock()
	for i := range r.n {
		q := r.ring[i]
		if !q.end.After(now.Add(-window)) || q.end.After(now) {
			continue
		}
		durs = append(durs, q.dur)
		if q.ttft > 0 {
			ttfts = append(ttfts, q.ttft)
		}
		if q.failed {
			failed++
		}
		if q.end.Before(oldest) {
			oldest = q.end
		}
	}
	full := r.n == recentCap
	r.mu.Unlock()
	if len(durs) == 0 {
		return s
	}
	span := window
	if full && now.Sub(oldest) < window {
		span = max(now.Sub(oldest), time.Second)
	}
	s.Requests = len(durs)
	s.RatePerSec = float64(len(durs)) / span.Seconds()
	s.ErrorRate = float64(failed) / float64(len(durs))
	s.LatencyP50, s.LatencyP95 = quantiles(durs)
	s.TTFTP50, s.TTFTP95 = quantiles(ttfts)
	return s
}

// quantiles returns the nearest-rank p50 and p95.
func quantiles(d []time.Duration) (p50, p95 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return rank(0.50), rank(0.95)
}
