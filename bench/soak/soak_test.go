package soak

import (
	"os"
	"testing"
	"time"
)

func series(rss []int64, gor []int) []Sample {
	out := make([]Sample, len(rss))
	for i := range rss {
		out[i] = Sample{At: time.Duration(i) * time.Second, RSSBytes: rss[i], AnonBytes: rss[i], Goroutines: gor[i], FDs: 20}
	}
	return out
}

func TestAnalyze(t *testing.T) {
	lim := Limits{Warmup: 2 * time.Second, RSS: 0.10, Goroutines: 0.10, FDs: 0.10, Slack: 8}
	tests := []struct {
		name string
		rss  []int64
		gor  []int
		want map[string]bool
	}{
		{"flat sawtooth", []int64{50, 90, 100, 60, 100, 70, 104, 65, 101, 80, 103}, []int{9, 9, 40, 42, 41, 40, 43, 40, 42, 41, 40},
			map[string]bool{"rss_anon_bytes": true, "goroutines": true, "fds": true}},
		{"memory leak", []int64{50, 90, 100, 104, 108, 112, 116, 120, 124, 128, 132}, []int{9, 9, 40, 40, 40, 40, 40, 40, 40, 40, 40},
			map[string]bool{"rss_anon_bytes": false, "goroutines": true, "fds": true}},
		{"goroutine leak", []int64{50, 90, 100, 100, 100, 100, 100, 100, 100, 100, 100}, []int{9, 9, 40, 50, 60, 70, 80, 90, 100, 110, 120},
			map[string]bool{"rss_anon_bytes": true, "goroutines": false, "fds": true}},
		{"latency spike in flight is no leak", []int64{50, 90, 100, 100, 100, 100, 100, 100, 100, 100, 100}, []int{9, 9, 40, 41, 40, 42, 41, 40, 90, 41, 95},
			map[string]bool{"rss_anon_bytes": true, "goroutines": true, "fds": true}},
		{"warm-up growth is ignored", []int64{10, 50, 100, 100, 101, 100, 99, 100, 100, 101, 100}, []int{1, 20, 40, 40, 40, 40, 40, 40, 40, 40, 40},
			map[string]bool{"rss_anon_bytes": true, "goroutines": true, "fds": true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gs, err := Analyze(series(tc.rss, tc.gor), lim)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range gs {
				if g.OK != tc.want[g.Series] {
					t.Errorf("%s: ok %v, want %v (%+v)", g.Series, g.OK, tc.want[g.Series], g)
				}
			}
		})
	}
	if _, err := Analyze(series([]int64{1, 2, 3}, []int{1, 1, 1}), lim); err == nil {
		t.Error("a verdict from one sample after warm-up")
	}
}

func TestRead(t *testing.T) {
	s, err := Read(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.AnonBytes <= 0 || s.AnonBytes > s.RSSBytes || s.Goroutines <= 0 || s.FDs <= 0 || s.HeapBytes == 0 {
		t.Errorf("sample %+v", s)
	}
}

func TestReadProcess(t *testing.T) {
	s, err := ReadProcess(os.Getpid(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.PeakRSSBytes < s.RSSBytes || s.FDs <= 0 || s.Goroutines != 0 {
		t.Errorf("sample %+v", s)
	}
	if _, err := ReadProcess(1<<30, 0); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
