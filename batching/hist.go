package batching

import (
	"math"
	"time"
)

// Histogram is a small fixed-memory log-linear histogram (eight sub-buckets
// per power of two, so quantiles are within about 6%). It is not safe for
// concurrent use: its owner guards it. The zero value is ready to use.
type Histogram struct {
	counts [64 * histSub]uint64
	n      uint64
	sum    float64
	max    float64
}

const histSub = 8

// Observe records v (negative values count as zero).
func (h *Histogram) Observe(v float64) {
	if v < 0 || math.IsNaN(v) {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

// ObserveDuration records d in seconds.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// histIndex maps v to a bucket; values below 2^-32 share bucket 0.
func histIndex(v float64) int {
	if v < 0x1p-32 {
		return 0
	}
	frac, exp := math.Frexp(v) // v = frac × 2^exp, frac in [0.5, 1)
	e := exp + 32
	if e < 1 {
		return 0
	}
	if e > 63 {
		return len(Histogram{}.counts) - 1
	}
	sub := int((frac*2 - 1) * histSub)
	return e*histSub + sub
}

// histValue is the midpoint of bucket i.
func histValue(i int) float64 {
	e, sub := i/histSub, i%histSub
	if e == 0 {
		return 0
	}
	lo := math.Ldexp(1+float64(sub)/histSub, e-33)
	hi := math.Ldexp(1+float64(sub+1)/histSub, e-33)
	return (lo + hi) / 2
}

// Quantile returns the value at quantile q in [0,1] (0 when empty).
func (h *Histogram) Quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return math.Min(histValue(i), h.max)
		}
	}
	return h.max
}

// Summary is a histogram's quantile summary, ready to export.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Summary snapshots h.
func (h *Histogram) Summary() Summary {
	s := Summary{Count: h.n, Max: h.max, P50: h.Quantile(0.5), P90: h.Quantile(0.9), P99: h.Quantile(0.99)}
	if h.n > 0 {
		s.Mean = h.sum / float64(h.n)
	}
	return s
}
