package wal

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkLogWrite writes one 1 KiB frame per Write (a group of one, as
// at 2,000 req/s) into a new log and reports the latency quantiles of the
// writes, with the file grown a chunk at a time by the Writes that reach
// its end (a chunk of zeros synced with their frames: the tail) and with
// it preallocated at open, as the stores open it.
func BenchmarkLogWrite(b *testing.B) {
	b.Run("grown", func(b *testing.B) { benchLogWrite(b, 0) })
	b.Run("preallocated", func(b *testing.B) { benchLogWrite(b, 64<<20) })
}

func benchLogWrite(b *testing.B, prealloc int64) {
	l, err := OpenLog(filepath.Join(b.TempDir(), "log"), prealloc)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	frame := AppendFrame(nil, Frame{Seq: 1, Count: 1, Group: 1, Payload: make([]byte, 1000)})
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := l.Write(frame); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(q(0.999), "p999-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
