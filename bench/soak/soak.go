// Package soak samples a process's memory, goroutines and file descriptors
// while load runs, and judges whether any of them grows after warm-up.
// `tollgate bench soak` drives a dev stack with it.
package soak

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Sample is one reading of the process.
type Sample struct {
	At       time.Duration `json:"at_ns"` // since the run started
	RSSBytes int64         `json:"rss_bytes"`
	// PeakRSSBytes is the process's high-water RSS so far (VmHWM).
	PeakRSSBytes int64 `json:"rss_peak_bytes"`
	// AnonBytes is the anonymous part of RSS (heap, stacks); FileBytes the
	// file-backed part, mostly the bbolt stores' memory maps, which grow
	// with the files and which the kernel can reclaim.
	AnonBytes  int64  `json:"rss_anon_bytes"`
	FileBytes  int64  `json:"rss_file_bytes"`
	HeapBytes  uint64 `json:"heap_inuse_bytes"`
	Goroutines int    `json:"goroutines"`
	FDs        int    `json:"fds"`
}

// Read samples this process: RSS from /proc/self/status (VmRSS), the Go
// heap in use, the goroutine count and the open descriptors in /proc/self/fd.
func Read(at time.Duration) (Sample, error) {
	s, err := readProc("self", at)
	if err != nil {
		return s, err
	}
	s.Goroutines = runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapBytes = ms.HeapInuse
	return s, nil
}

// ReadProcess samples another process (a child the soak started): RSS and
// its peak from /proc/PID/status and the descriptors in /proc/PID/fd. Its
// heap and goroutines are not visible from outside and stay zero.
func ReadProcess(pid int, at time.Duration) (Sample, error) {
	return readProc(strconv.Itoa(pid), at)
}

func readProc(pid string, at time.Duration) (Sample, error) {
	s := Sample{At: at}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return s, fmt.Errorf("soak: %w", err)
	}
	for _, line := range bytes.Split(status, []byte("\n")) {
		for _, field := range []struct {
			name string
			dst  *int64
		}{{"VmRSS:", &s.RSSBytes}, {"VmHWM:", &s.PeakRSSBytes}, {"RssAnon:", &s.AnonBytes}, {"RssFile:", &s.FileBytes}} {
			rest, ok := bytes.CutPrefix(line, []byte(field.name))
			if !ok {
				continue
			}
			f := bytes.Fields(rest)
			if len(f) < 1 {
				return s, fmt.Errorf("soak: %s line %q", field.name, line)
			}
			kb, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				return s, fmt.Errorf("soak: %s line %q", field.name, line)
			}
			*field.dst = kb << 10
		}
	}
	fds, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return s, fmt.Errorf("soak: %w", err)
	}
	s.FDs = len(fds)
	return s, nil
}

// Limits say how much growth after warm-up fails a run. Growth compares
// the last third of the samples after warm-up with the first third: for
// RSS their peaks, because with GOGC at 400 % the heap (and RSS) saws
// between collections and the sawtooth's top is what is steady; for
// goroutines and fds their floors (minima), because those follow the
// requests in flight, which a stall on a busy machine multiplies for a few
// samples, while a leak raises the floor itself.
type Limits struct {
	Warmup time.Duration `json:"warmup_ns"`
	// RSS and the others are fractions (0.10: 10 %); Slack is an absolute
	// allowance for goroutines and fds, whose counts follow the requests
	// in flight.
	RSS        float64 `json:"rss"`
	Goroutines float64 `json:"goroutines"`
	FDs        float64 `json:"fds"`
	Slack      int     `json:"slack"`
}

// Growth is one series' verdict.
type Growth struct {
	Series string  `json:"series"`
	First  float64 `json:"first"`  // peak or median of the first third
	Last   float64 `json:"last"`   // of the last third
	Growth float64 `json:"growth"` // (last-first)/first
	Limit  float64 `json:"limit"`
	OK     bool    `json:"ok"`
}

// Analyze judges the samples taken after lim.Warmup. At least six are
// needed for a verdict.
func Analyze(samples []Sample, lim Limits) ([]Growth, error) {
	var after []Sample
	for _, s := range samples {
		if s.At >= lim.Warmup {
			after = append(after, s)
		}
	}
	if len(after) < 6 {
		return nil, fmt.Errorf("soak: %d samples after the %s warm-up, need at least 6 (run longer or sample more often)", len(after), lim.Warmup)
	}
	third := len(after) / 3
	first, last := after[:third], after[len(after)-third:]
	series := []struct {
		name  string
		limit float64
		slack int
		of    func([]Sample, func(Sample) float64) float64
		get   func(Sample) float64
	}{
		// Anonymous RSS: the file-backed part is the stores' memory maps,
		// which grow with the files by design (reported, not judged).
		{"rss_anon_bytes", lim.RSS, 0, peak, func(s Sample) float64 { return float64(s.AnonBytes) }},
		{"goroutines", lim.Goroutines, lim.Slack, floor, func(s Sample) float64 { return float64(s.Goroutines) }},
		{"fds", lim.FDs, lim.Slack, floor, func(s Sample) float64 { return float64(s.FDs) }},
	}
	out := make([]Growth, 0, len(series))
	for _, sr := range series {
		f, l := sr.of(first, sr.get), sr.of(last, sr.get)
		g := Growth{Series: sr.name, First: f, Last: l, Limit: sr.limit}
		if f > 0 {
			g.Growth = (l - f) / f
		}
		g.OK = l <= f*(1+sr.limit)+float64(sr.slack)
		out = append(out, g)
	}
	return out, nil
}

func peak(ss []Sample, get func(Sample) float64) float64 {
	m := 0.0
	for _, s := range ss {
		m = max(m, get(s))
	}
	return m
}

func floor(ss []Sample, get func(Sample) float64) float64 {
	m := get(ss[0])
	for _, s := range ss[1:] {
		m = min(m, get(s))
	}
	return m
}
