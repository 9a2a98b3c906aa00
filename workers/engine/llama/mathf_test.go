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
