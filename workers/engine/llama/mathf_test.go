package llama

import (
	"math"
	"testing"
)

func TestExpfMatchesCorrectlyRounded(t *testing.T) {
	// Every float32 in steps across the useful range, plus the edges.
	check := func(x float32) {
		t.Helper()
		want := float32(math.Exp(float64(x)))
		if got := expf(x); got != want && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
			t.Fatalf("expf(%g) = %g (%#x), want %g (%#x)", x, got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
	for bits := math.Float32bits(-103.9); bits > math.Float32bits(-1e-30); bits -= 2003 {
		check(math.Float32frombits(bits))
	}
	for bits := uint32(0); bits < math.Float32bits(88.7); bits += 2003 {
		check(math.Float32frombits(bits))
	}
	for _, x := range []float32{0, -0.0, 1, -1, 88.72283, 89, -104, -110, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())} {
		check(x)
	}
}

func TestDivf(t *testing.T) {
	rng := uint64(88172645463325252)
	next := func() uint32 {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return uint32(rng)
	}
	check := func(a, b float32) {
		t.Helper()
		if got, want := divf(a, 1/float64(b)), a/b; got != want && !(got != got && want != want) {
			t.Fatalf("divf(%g, 1/%g) = %g, want %g", a, b, got, want)
		}
	}
	// The divisors the engine uses: sqrt(head size) and softmax sums.
	for _, b := range []float32{sqrtf(2), sqrtf(4), sqrtf(8), sqrtf(16), sqrtf(64), sqrtf(128)} {
		for range 1 << 16 {
			check(math.Float32frombits(next()%0x7f000000), b)
		}
	}
	for range 1 << 18 {
		a := math.Float32frombits(next() % 0x7f000000)
		b := math.Float32frombits(next()%0x3f000000 + 0x20000000)
		check(a, b)
	}
	for _, a := range []float32{0, 1, 3, 1e-30, 1e30} {
		check(a, 3)
	}
}

func TestMatmulMatchesSequentialDots(t *testing.T) {
	const in = 13
	for _, tt := range []struct{ n, d, lo, hi int }{
		{1, 7, 0, 7}, {1, 20, 6, 20}, {2, 7, 0, 7}, {3, 11, 0, 11}, {5, 16, 3, 12}, {16, 64, 0, 64}, {17, 10, 4, 10},
	} {
		w := make([]float32, tt.d*in)
		x := make([]float32, tt.n*in)
		for i := range w {
			w[i] = float32(math.Sin(float64(i)*1.3)) * 3
		}
		for i := range x {
			x[i] = float32(math.Cos(float64(i)*0.7)) / 7
		}
		out := make([]float32, tt.n*tt.d)
		matmul(out, x, w, tt.n, in, tt.d, tt.lo, tt.hi)
		for r := 0; r < tt.n; r++ {
			for i := 0; i < tt.d; i++ {
				var want float32
				if i >= tt.lo && i < tt.hi {
					for j := 0; j < in; j++ {
						want += float32(w[i*in+j] * x[r*in+j])
					}
				}
				if got := out[r*tt.d+i]; got != want {
					t.Fatalf("n=%d d=%d [%d,%d): out[%d][%d] = %g, want %g", tt.n, tt.d, tt.lo, tt.hi, r, i, got, want)
				}
			}
		}
	}
}
