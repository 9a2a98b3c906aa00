package zk

import (
	"errors"
	"math/big"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	edbn254 "github.com/consensys/gnark-crypto/ecc/bn254/twistededwards"
	"github.com/consensys/gnark/constraint/solver"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/std/algebra/native/twistededwards"
)

// Twisted Edwards arithmetic on BN254's companion curve (gnark-crypto
// ecc/bn254/twistededwards: a·x² + y² = 1 + d·x²·y² over Fr with a = -1,
// cofactor 8, prime subgroup order ℓ), written here instead of using
// gnark's std/algebra/native/twistededwards so that every wire is
// constrained without an argument about its inputs:
//
//   - every division is num · inv(den) with api.Inverse, whose constraint
//     den · inv = 1 makes a zero denominator unsatisfiable (gnark's own
//     formulas use DivUnchecked, whose constraint den · q = num leaves q
//     free when num = den = 0: the v1 forgery);
//   - the formulas are complete on the curve: a = -1 is a square in Fr and
//     d is not (TestEdwardsCurveIsComplete), so for any two points on the
//     curve 1 ± d·x1·x2·y1·y2 ≠ 0 (Bernstein–Lange, "Twisted Edwards
//     curves", Thm 3.3); doubling's denominators are a·x² + y² = 1 + d·x²·y²
//     and 2 - a·x² - y² = 1 - d·x²·y², the same quantities with P1 = P2. So
//     an honest prover never meets a zero denominator, and the Inverse
//     constraints cost completeness nothing;
//   - the only hint, cofactorPreimageHint, outputs a point that is itself
//     constrained on the curve and multiplied back by the cofactor.
//
// Every input point is asserted on the curve before it is used, and each
// result of add/double of on-curve points is on the curve (the group law),
// so the completeness argument applies at every step.

var (
	edParams   = edbn254.GetEdwardsCurve()
	edA        = toBig(&edParams.A)
	edD        = toBig(&edParams.D)
	edOrder    = new(big.Int).Set(&edParams.Order)
	edCofactor = toBig(&edParams.Cofactor)
	edBase     = twistededwards.Point{X: toBig(&edParams.Base.X), Y: toBig(&edParams.Base.Y)}
)

func toBig(e *fr.Element) *big.Int {
	var b big.Int
	return e.BigInt(&b)
}

func init() {
	solver.RegisterHint(cofactorPreimageHint)
}

// edwards holds the API for the point operations below.
type edwards struct{ api frontend.API }

// assertOnCurve: a·x² + y² = 1 + d·x²·y².
func (e edwards) assertOnCurve(p twistededwards.Point) {
	api := e.api
	xx := api.Mul(p.X, p.X)
	yy := api.Mul(p.Y, p.Y)
	api.AssertIsEqual(api.Add(api.Mul(edA, xx), yy), api.Add(1, api.Mul(edD, api.Mul(xx, yy))))
}

// div is num/den with den ≠ 0 enforced (den · inv = 1).
func (e edwards) div(num, den frontend.Variable) frontend.Variable {
	return e.api.Mul(num, e.api.Inverse(den))
}

// add is the complete twisted Edwards addition
// x3 = (x1·y2 + y1·x2) / (1 + d·x1·x2·y1·y2),
// y3 = (y1·y2 - a·x1·x2) / (1 - d·x1·x2·y1·y2).
func (e edwards) add(p, q twistededwards.Point) twistededwards.Point {
	api := e.api
	x1y2 := api.Mul(p.X, q.Y)
	y1x2 := api.Mul(p.Y, q.X)
	x1x2 := api.Mul(p.X, q.X)
	y1y2 := api.Mul(p.Y, q.Y)
	t := api.Mul(edD, api.Mul(x1x2, y1y2))
	return twistededwards.Point{
		X: e.div(api.Add(x1y2, y1x2), api.Add(1, t)),
		Y: e.div(api.Sub(y1y2, api.Mul(edA, x1x2)), api.Sub(1, t)),
	}
}

// double is add(p, p) with the curve equation substituted:
// x3 = 2xy / (a·x² + y²), y3 = (y² - a·x²) / (2 - a·x² - y²).
func (e edwards) double(p twistededwards.Point) twistededwards.Point {
	api := e.api
	xy := api.Mul(p.X, p.Y)
	axx := api.Mul(edA, api.Mul(p.X, p.X))
	yy := api.Mul(p.Y, p.Y)
	den := api.Add(axx, yy)
	return twistededwards.Point{
		X: e.div(api.Mul(2, xy), den),
		Y: e.div(api.Sub(yy, axx), api.Sub(2, den)),
	}
}

func (e edwards) neg(p twistededwards.Point) twistededwards.Point {
	return twistededwards.Point{X: e.api.Neg(p.X), Y: p.Y}
}

// assertInSubgroup constrains an on-curve p to the prime-order subgroup:
// p = [8]q for a hinted q that is itself on the curve. The curve's group
// has order 8ℓ and its 2-part has exponent dividing 8, so [8]E is exactly
// the subgroup of order ℓ; a point with a small-order component has no
// such q, whatever the prover puts in the hint's place.
func (e edwards) assertInSubgroup(p twistededwards.Point) {
	q, err := e.api.Compiler().NewHint(cofactorPreimageHint, 2, p.X, p.Y)
	if err != nil {
		panic(err) // only for a wrong number of inputs
	}
	pre := twistededwards.Point{X: q[0], Y: q[1]}
	e.assertOnCurve(pre)
	m := pre
	for c := edCofactor.Uint64(); c > 1; c /= 2 {
		m = e.double(m)
	}
	e.api.AssertIsEqual(m.X, p.X)
	e.api.AssertIsEqual(m.Y, p.Y)
}

// assertPrimeOrder constrains p on the curve, in the prime-order subgroup
// and not the identity: a point of order exactly ℓ (so not of small order).
// The only points with x = 0 are the identity (0, 1) and (0, -1), of order 2.
func (e edwards) assertPrimeOrder(p twistededwards.Point) {
	e.assertOnCurve(p)
	e.assertInSubgroup(p)
	e.api.AssertIsDifferent(p.X, 0)
}

// doubleScalarMul is [s1]p1 + [s2]p2 for bit decompositions s1, s2
// (little-endian, same length) and on-curve p1, p2: left-to-right joint
// double-and-add over the table {O, p1, p2, p1+p2}. Every table entry and
// every intermediate is on the curve, so no denominator can vanish.
func (e edwards) doubleScalarMul(p1, p2 twistededwards.Point, s1, s2 []frontend.Variable) twistededwards.Point {
	api := e.api
	if len(s1) != len(s2) || len(s1) == 0 {
		panic("doubleScalarMul: scalars of different lengths")
	}
	sum := e.add(p1, p2)
	pick := func(i int) twistededwards.Point {
		return twistededwards.Point{
			X: api.Lookup2(s1[i], s2[i], 0, p1.X, p2.X, sum.X),
			Y: api.Lookup2(s1[i], s2[i], 1, p1.Y, p2.Y, sum.Y),
		}
	}
	n := len(s1)
	res := pick(n - 1)
	for i := n - 2; i >= 0; i-- {
		res = e.add(e.double(res), pick(i))
	}
	return res
}

// assertBitsBelow constrains the little-endian bits (each already boolean)
// to encode an integer strictly below the constant bound: scanning from
// the top, eq stays 1 while the bits equal the bound's; a bit above the
// bound's while eq is 1 is refused, and the encoding may not equal the
// bound. One constraint per bit.
func assertBitsBelow(api frontend.API, bits []frontend.Variable, bound *big.Int) {
	if bound.Sign() <= 0 || bound.BitLen() > len(bits) {
		panic("assertBitsBelow: bound out of range")
	}
	var eq frontend.Variable = 1
	for i := len(bits) - 1; i >= 0; i-- {
		if bound.Bit(i) == 1 {
			eq = api.Mul(eq, bits[i])
		} else {
			api.AssertIsEqual(api.Mul(eq, bits[i]), 0)
		}
	}
	api.AssertIsEqual(eq, 0)
}

// cofactorPreimageHint returns q = [8⁻¹ mod ℓ]p for p = (x, y), so that
// [8]q = p when p is in the prime-order subgroup. For any other input it
// returns (0, 0), which is not on the curve: the constraints then fail.
func cofactorPreimageHint(_ *big.Int, in, out []*big.Int) error {
	if len(in) != 2 || len(out) != 2 {
		return errors.New("cofactorPreimageHint: want 2 inputs and 2 outputs")
	}
	var p edbn254.PointAffine
	p.X.SetBigInt(in[0])
	p.Y.SetBigInt(in[1])
	out[0].SetUint64(0)
	out[1].SetUint64(0)
	if !p.IsOnCurve() {
		return nil
	}
	inv := new(big.Int).ModInverse(edCofactor, edOrder)
	var q edbn254.PointAffine
	q.ScalarMultiplication(&p, inv)
	q.X.BigInt(out[0])
	q.Y.BigInt(out[1])
	return nil
}
