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
	for bits := math.Float32bits(-103.9); bits > math.Float32bits(-1e-30); bits -= 997 {
		check(math.Float32frombits(bits))
	}
	for bits := uint32(0); bits < math.Float32bits(88.7); bits += 997 {
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
