package llama

import "math"

// The forward pass reproduces llama2.c's run.c bit for bit: every float32
// operation is rounded as C rounds it (explicit conversions keep the Go
// compiler from fusing multiply-adds), sums run in the same order, and the
// transcendental functions below return the correctly rounded float32 result
// that glibc's expf/sqrtf return.

const (
	expfShift  = 0x1.8p52 // adding this rounds a float64 to an integer
	expfN      = 256      // table entries per power of two
	expfInvLn2 = expfN / math.Ln2
)

// expfTable[i] holds the bits of 2^(i/256); a uint8 index needs no bounds
// check.
var expfTable = func() (t [expfN]uint64) {
	for i := range t {
		t[i] = math.Float64bits(math.Exp2(float64(i) / expfN))
	}
	return t
}()

// Taylor coefficients of e^(r·ln2/256) in r: (ln2/256)^n / n!.
const (
	expfL  = math.Ln2 / expfN
	expfC1 = expfL
	expfC2 = expfL * expfL / 2
	expfC3 = expfL * expfL * expfL / 6
	expfC4 = expfL * expfL * expfL * expfL / 24
)

// expf is e^x rounded to float32. It reduces x = (k/256)·ln2 + u with
// |u| ≤ ln2/512 and evaluates e^u by a degree-4 Taylor polynomial in
// float64, whose relative error (about 4e-17) is far below float32's
// rounding granularity, so the result is the correctly rounded one that
// glibc's expf returns (TestExpfMatchesCorrectlyRounded).
func expf(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > 88.72284:
		return float32(math.Inf(1))
	case x < -103.97208:
		return 0
	}
	return expfReduced(x)
}

// expfReduced is expf for -103.97208 ≤ x ≤ 88.72284 (small enough to inline).
func expfReduced(x float32) float32 {
	z := float64(x) * expfInvLn2
	kd := z + expfShift
	// The low bits of kd's mantissa hold k = round(z) in two's complement
	// (expfShift's low 20 bits are zero), so kb's low byte is k mod 256 and
	// (kb>>8)<<52 adds k>>8 to the exponent of the table entry.
	kb := math.Float64bits(kd)
	r := z - (kd - expfShift) // e^x = 2^(k/256) · e^(r·ln2/256), |r| ≤ 1/2
	p := 1 + r*(expfC1+r*(expfC2+r*(expfC3+r*expfC4)))
	return float32(math.Float64frombits(expfTable[uint8(kb)]+(kb>>8)<<52) * p)
}

// sqrtf is the correctly rounded float32 square root.
func sqrtf(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// divf is the float32 quotient a/b given inv = 1/float64(b), computed with
// a multiplication. It equals a/b exactly: the float64 product is within
// 2^-52 (relative) of the true quotient, while a quotient of two float32s is
// never closer than about 2^-49 to a float32 rounding midpoint without
// being exactly representable, so rounding to float32 lands on the
// correctly rounded quotient. (TestDivf checks it on millions of pairs.)
func divf(a float32, inv float64) float32 { return float32(float64(a) * inv) }
