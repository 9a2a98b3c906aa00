package llama

import (
	"testing"
	"time"
)

func ws4x2(out, att, vc []float32, vo, stride int) {
	for i := 0; i+4 <= len(out); i += 4 {
		var x0, x1, x2, x3 float32
		off := vo + i
		for _, a := range att {
			v := vc[off : off+4 : off+4]
			x0 += float32(a * v[0])
			x1 += float32(a * v[1])
			x2 += float32(a * v[2])
			x3 += float32(a * v[3])
			off += stride
		}
		o := out[i : i+4 : i+4]
		o[0], o[1], o[2], o[3] = x0, x1, x2, x3
	}
}

func wsInterleaved(out, att, vc []float32, vo, stride int) {
	for i := 0; i+8 <= len(out); i += 8 {
		var x0, x1, x2, x3, x4, x5, x6, x7 float32
		off := vo + i
		for _, a := range att {
			v := vc[off : off+8 : off+8]
			off += stride
			v0 := v[0]
			x0 += float32(a * v0)
			v1 := v[1]
			x1 += float32(a * v1)
			v2 := v[2]
			x2 += float32(a * v2)
			v3 := v[3]
			x3 += float32(a * v3)
			v4 := v[4]
			x4 += float32(a * v4)
			v5 := v[5]
			x5 += float32(a * v5)
			v6 := v[6]
			x6 += float32(a * v6)
			v7 := v[7]
			x7 += float32(a * v7)
		}
		o := out[i : i+8 : i+8]
		o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7] = x0, x1, x2, x3, x4, x5, x6, x7
	}
}

func TestTmpWS(t *testing.T) {
	const stride, T = 32, 256
	vc := make([]float32, stride*T)
	att := make([]float32, T)
	out := make([]float32, 8)
	for i := range vc {
		vc[i] = float32(i%5) * 0.1
	}
	ks := []struct {
		name string
		f    func()
	}{
		{"8-wide", func() { weightedSum8(out, att, vc, 8, stride) }},
		{"4-wide x2", func() { ws4x2(out, att, vc, 8, stride) }},
		{"interleaved", func() { wsInterleaved(out, att, vc, 8, stride) }},
		{"scores8", func() { scores8(att, out, vc, 8, stride, 2.8) }},
		{"softmax", func() { softmax(att) }},
	}
	best := make([]time.Duration, len(ks))
	for i := range best {
		best[i] = time.Hour
	}
	for range 3000 {
		for i, k := range ks {
			s := time.Now()
			k.f()
			best[i] = min(best[i], time.Since(s))
		}
	}
	for i, k := range ks {
		t.Logf("%-12s %v  %.2f ns/t", k.name, best[i], float64(best[i].Nanoseconds())/T)
	}
}
