//go:build goexperiment.simd && amd64

package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatmulWTMatchesScalar compares the transposed-weight kernels
// (AVX-512 and AVX2) bit for bit with the scalar matmul on every batch size
// up to 20.
func TestMatmulWTMatchesScalar(t *testing.T) {
	if !transposedWeightsOK() {
		t.Skip("the CPU has no AVX-512")
	}
	defer func(v bool) { simdAVX512 = v }(simdAVX512)
	for _, avx512 := range []bool{false, true} {
		if avx512 && !simdAVX512 || !avx512 && !simdAVX2 {
			continue // the CPU lacks the instructions
		}
		simdAVX512 = avx512
		testMatmulWT(t)
	}
}

func testMatmulWT(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := 1; n <= 20; n++ {
		for _, dims := range [][2]int{{64, 172}, {172, 64}, {64, 32}, {5, 7}, {64, 512}} {
			in, d := dims[0], dims[1]
			x, w := randFloats(rng, n*in), randFloats(rng, d*in)
			wt := make([]float32, transposedLen(d, in))
			transposeMatrix(wt, w, d, in)
			want, got := make([]float32, n*d), make([]float32, n*d)
			matmul(want, x, w, n, in, d, 0, d)
			matmulWT(got, x, wt, n, in, d)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d in=%d d=%d: out[%d][%d] = %v, scalar %v", n, in, d, i/d, i%d, got[i], want[i])
				}
			}
		}
	}
}

// BenchmarkMatmulKernels compares the batch-lane kernel (matmulRows) with
// the transposed-weight one (matmulWT) on stories260K's matrix shapes.
func BenchmarkMatmulKernels(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{2, 8, 16} {
		for _, dims := range [][2]int{{64, 64}, {64, 172}, {172, 64}, {64, 512}} {
			in, d := dims[0], dims[1]
			x, w := randFloats(rng, n*in), randFloats(rng, d*in)
			wt := make([]float32, transposedLen(d, in))
			transposeMatrix(wt, w, d, in)
			out := make([]float32, n*d)
			xt := make([]float32, transposedSize(n, in))
			b.Run(fmt.Sprintf("lanes/n=%d/in=%d/d=%d", n, in, d), func(b *testing.B) {
				for b.Loop() {
					matmulRows(xt, out, x, w, n, in, d, 0, d)
				}
			})
			b.Run(fmt.Sprintf("wt/n=%d/in=%d/d=%d", n, in, d), func(b *testing.B) {
				for b.Loop() {
					matmulWT(out, x, wt, n, in, d)
				}
			})
		}
	}
}
