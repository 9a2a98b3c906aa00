//go:build goexperiment.simd && amd64

package llama

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"simd/archsimd"
)

// matmulLanes is matmul on the vector kernel with the given lanes (8 or
// 16), whatever lanesFor would pick.
func matmulLanes(xt, out, x, w []float32, n, in, d, lo, hi, lanes int) {
	transposeRows(xt, x, n, in, lanes)
	matmulVec(xt, out, w, n, in, d, lo, hi, lanes)
}

// TestMatmulLanesMatchesScalar runs both vector kernels (8 lanes, AVX2; 16
// lanes, AVX-512) on every batch size up to 40, whichever matmulRows would
// pick, and compares them bit for bit with the scalar matmul.
func TestMatmulLanesMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, lanes := range []int{8, 16} {
		if lanes == 8 && !simdAVX2 || lanes == 16 && !simdAVX512 {
			continue // the CPU lacks the instructions
		}
		for n := 1; n <= 40; n++ {
			for _, dims := range [][2]int{{64, 172}, {172, 64}, {5, 7}} {
				in, d := dims[0], dims[1]
				t.Run(fmt.Sprintf("lanes=%d/n=%d/in=%d/d=%d", lanes, n, in, d), func(t *testing.T) {
					x, w := randFloats(rng, n*in), randFloats(rng, d*in)
					want, got := make([]float32, n*d), make([]float32, n*d)
					matmul(want, x, w, n, in, d, 0, d)
					matmulLanes(make([]float32, transposedSize(n, in)), got, x, w, n, in, d, 0, d, lanes)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("out[%d][%d] = %v, scalar %v", i/d, i%d, got[i], want[i])
						}
					}
				})
			}
		}
	}
}

// TestExpf4MatchesScalar compares the vector exponentials (expf4, expf8) with expfReduced
// on a dense sweep of its range and on random values.
func TestExpf4MatchesScalar(t *testing.T) {
	if !simdAVX2 {
		t.Skip("the CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var in, out [4]float32
	var in8, out8 [8]float32
	check := func() {
		expf4(archsimd.LoadFloat32x4(&in)).Store(&out)
		for k, v := range in {
			if want := expfReduced(v); math.Float32bits(out[k]) != math.Float32bits(want) {
				t.Fatalf("expf4(%v) = %v, expfReduced %v", v, out[k], want)
			}
		}
		if !simdAVX512 {
			return
		}
		copy(in8[:], in[:])
		copy(in8[4:], in[:])
		in8[5] = -in8[5] / 2
		expf8(archsimd.LoadFloat32x8(&in8)).Store(&out8)
		for k, v := range in8 {
			if want := expfReduced(v); math.Float32bits(out8[k]) != math.Float32bits(want) {
				t.Fatalf("expf8(%v) = %v, expfReduced %v", v, out8[k], want)
			}
		}
	}
	for v := float32(-103.97208); v <= 88.72284; v += 0.0137 {
		in = [4]float32{v, -v / 3, v / 7, math.Nextafter32(v, 0)}
		for k := range in {
			in[k] = max(min(in[k], 88.72284), -103.97208)
		}
		check()
	}
	for range 200000 {
		for k := range in {
			in[k] = -103.97208 * float32(rng.Float64())
		}
		check()
	}
}

// TestAttentionVecMatchesScalar compares the vector attention with the
// scalar one, bit for bit, for positions around the vector width and
// grouped or plain multi-head attention.
func TestAttentionVecMatchesScalar(t *testing.T) {
	if !simdAVX2 {
		t.Skip("the CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, heads := range [][2]int{{8, 4}, {8, 8}, {6, 2}, {5, 5}} {
		cfg := Config{Dim: heads[0] * 8, HiddenDim: 16, NLayers: 2, NHeads: heads[0], NKVHeads: heads[1], VocabSize: 4, SeqLen: 70}
		m := newModel(cfg, &weights{})
		for _, pos := range []int{0, 1, 6, 7, 8, 9, 15, 16, 17, 40, 69} {
			t.Run(fmt.Sprintf("heads=%d/kv=%d/pos=%d", heads[0], heads[1], pos), func(t *testing.T) {
				kv := m.newKVCache(cfg.SeqLen)
				copy(kv.k, randFloats(rng, len(kv.k)))
				copy(kv.v, randFloats(rng, len(kv.v)))
				q := randFloats(rng, cfg.Dim)
				for i := range q {
					q[i] *= 0.01 // keep most scores within the exponential's range
				}
				rw := row{pos: pos, kv: kv}
				want, got := make([]float32, cfg.Dim), make([]float32, cfg.Dim)
				att := make([]float32, attScratch(cfg))
				m.attentionScalar(want, q, rw, 1, att, cfg.NHeads/cfg.NKVHeads)
				if !m.attentionVec(got, q, rw, 1, att, cfg.NHeads/cfg.NKVHeads) {
					t.Fatal("attentionVec declined a head size of 8")
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("out[%d] = %v, scalar %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestSoftmaxVecMatchesScalar compares softmaxVec with softmax on vectors
// of many lengths, with ties, zeros of both signs and far-out values.
func TestSoftmaxVecMatchesScalar(t *testing.T) {
	if !simdAVX2 {
		t.Skip("the CPU has no AVX2")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 2, 7, 8, 9, 15, 16, 17, 64, 129, 512} {
		for trial := range 20 {
			x := randFloats(rng, n)
			switch trial % 4 {
			case 1:
				for i := range x {
					x[i] *= 0.01
				}
			case 2:
				x[rng.IntN(n)] = float32(math.Copysign(0, -1))
			case 3:
				x[rng.IntN(n)] = x[rng.IntN(n)] // a tie
			}
			want := append([]float32(nil), x...)
			softmax(want)
			softmaxVec(x)
			for i := range want {
				if math.Float32bits(x[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d trial %d: [%d] = %v, scalar %v", n, trial, i, x[i], want[i])
				}
			}
		}
	}
}

// TestSwigluFastMatchesScalar compares swigluFast with swiglu, including
// values whose exponent leaves expfReduced's range.
func TestSwigluFastMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 7, 8, 9, 17, 172} {
		for trial := range 20 {
			hb, hb2 := randFloats(rng, n), randFloats(rng, n)
			if trial%3 == 0 {
				hb[rng.IntN(n)] = 120 // e^-120 is below expfReduced's range
			}
			want := append([]float32(nil), hb...)
			swiglu(want, hb2)
			swigluFast(hb, hb2)
			for i := range want {
				if math.Float32bits(hb[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d trial %d: [%d] = %v, scalar %v", n, trial, i, hb[i], want[i])
				}
			}
		}
	}
}

// TestExpf8Exhaustive compares expf8 with expfReduced on every float32 of
// expfReduced's range (about two billion values; a sample of them unless
// TOLLGATE_EXHAUSTIVE is set).
func TestExpf8Exhaustive(t *testing.T) {
	if !simdAVX512 {
		t.Skip("the CPU has no AVX-512")
	}
	step := uint32(1)
	if os.Getenv("TOLLGATE_EXHAUSTIVE") == "" {
		step = 997
	}
	var in, out [8]float32
	n := 0
	check := func() {
		expf8(archsimd.LoadFloat32x8(&in)).Store(&out)
		for k, v := range in[:n] {
			if want := expfReduced(v); math.Float32bits(out[k]) != math.Float32bits(want) {
				t.Fatalf("expf8(%v) = %v (%#x), expfReduced %v (%#x)", v, out[k], math.Float32bits(out[k]), want, math.Float32bits(want))
			}
		}
		n = 0
	}
	sweep := func(from, to uint32) { // float32 bit patterns, inclusive
		for b := from; b <= to && b >= from; b += step {
			in[n] = math.Float32frombits(b)
			if n++; n == 8 {
				check()
			}
		}
		for k := n; k < 8; k++ {
			in[k] = 0
		}
		check()
	}
	sweep(0, math.Float32bits(88.72284))       // +0 up
	sweep(1<<31, math.Float32bits(-103.97208)) // -0 down
}
