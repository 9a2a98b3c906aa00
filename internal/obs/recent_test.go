package obs

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRecentSummary(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	tests := []struct {
		name   string
		fill   func(r *Recent)
		window time.Duration
		want   RecentSummary
	}{
		{"empty", func(*Recent) {}, time.Minute, RecentSummary{Window: time.Minute}},
		{"twenty in the last minute, one older", func(r *Recent) {
			r.Observe(now.Add(-2*time.Minute), time.Hour, 0, true) // outside the window
			for i := 1; i <= 20; i++ {
				r.Observe(now.Add(-time.Duration(i)*time.Second), time.Duration(i)*100*ms, time.Duration(i)*ms, i == 20)
			}
		}, time.Minute, RecentSummary{Window: time.Minute, Requests: 20, RatePerSec: 20.0 / 60, ErrorRate: 0.05,
			LatencyP50: 1000 * ms, LatencyP95: 1900 * ms, TTFTP50: 10 * ms, TTFTP95: 19 * ms}},
		{"ring full: rate over the span it covers", func(r *Recent) {
			for i := range recentCap + 100 {
				r.Observe(now.Add(-10*time.Second+time.Duration(i)*ms), 50*ms, 0, false)
			}
		}, time.Minute, RecentSummary{Window: time.Minute, Requests: recentCap, RatePerSec: float64(recentCap) / (10*time.Second - 100*ms).Seconds(),
			LatencyP50: 50 * ms, LatencyP95: 50 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := new(Recent)
			tc.fill(r)
			if diff := cmp.Diff(r.Summary(now, tc.window), tc.want); diff != "" {
				t.Errorf("Summary (-got +want):\n%s", diff)
			}
		})
	}
	var nilR *Recent
	nilR.Observe(now, ms, 0, false)
	if got := nilR.Summary(now, time.Minute); got.Requests != 0 {
		t.Errorf("nil Recent summary = %+v", got)
	}
}
