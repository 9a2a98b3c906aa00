package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatmulRowsMatchesScalar checks that matmulRows (the vector kernel
// under GOEXPERIMENT=simd on amd64, matmul otherwise) is bit-identical to
// the scalar matmul for many shapes, batch sizes (multiples of 8 and 16 or
// not) and column ranges, including values that make rounding matter.
func TestMatmulRowsMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type shape struct{ n, in, d, lo, hi int }
	var cases []shape
	for _, n := range []int{1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40} {
		for _, dims := range [][2]int{{64, 64}, {64, 32}, {64, 172}, {172, 64}, {64, 512}, {1, 1}, {3, 13}, {288, 768}} {
			in, d := dims[0], dims[1]
			cases = append(cases, shape{n, in, d, 0, d})
			if d > 12 {
				cases = append(cases, shape{n, in, d, 6, d - 5}, shape{n, in, d, d / 2 / 6 * 6, d})
			}
		}
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("n=%d/in=%d/d=%d/cols=%d-%d", c.n, c.in, c.d, c.lo, c.hi), func(t *testing.T) {
			x := randFloats(rng, c.n*c.in)
			w := randFloats(rng, c.d*c.in)
			want := make([]float32, c.n*c.d)
			got := make([]float32, c.n*c.d)
			for i := range want {
				want[i] = -1
				got[i] = -1
			}
			matmul(want, x, w, c.n, c.in, c.d, c.lo, c.hi)
			xt := make([]float32, transposedSize(c.n, c.in))
			for i := range xt {
				xt[i] = float32(math.NaN()) // stale scratch must not matter
			}
			matmulRows(xt, got, x, w, c.n, c.in, c.d, c.lo, c.hi)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("out[%d][%d] = %v (%#x), scalar %v (%#x)", i/c.d, i%c.d,
						got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
				}
			}
		})
	}
}

// randFloats mixes magnitudes so that sums lose bits and any change of
// order or fused multiply-add shows.
func randFloats(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		v := float32(rng.NormFloat64())
		switch rng.IntN(8) {
		case 0:
			v *= 1e4
		case 1:
			v *= 1e-4
		case 2:
			v = 0
		}
		s[i] = v
	}
	return s
}
