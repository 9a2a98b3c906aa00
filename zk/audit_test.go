package zk

// Tests behind the claims in AUDIT.md that are about the circuit as a
// whole rather than one attack: the curve's formulas are complete, the
// gadgets agree with gnark-crypto, the compiled v2 circuit uses only the
// audited hints and no commitment, and v1 receipts still verify under v1
// keys while only v2 keys prove.

import (
	"bytes"
	"encoding/base64"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	edbn254 "github.com/consensys/gnark-crypto/ecc/bn254/twistededwards"
	"github.com/consensys/gnark/backend/groth16"
	csbn254 "github.com/consensys/gnark/constraint/bn254"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
	"github.com/consensys/gnark/std/algebra/native/twistededwards"
	"github.com/consensys/gnark/test"

	"github.com/tollgate-ai/tollgate/receipts"
)

// The addition law is complete (no zero denominator for any two points on
// the curve) when a is a square and d is not (Bernstein–Lange 2008, Thm 3.3).
func TestEdwardsCurveIsComplete(t *testing.T) {
	if edParams.A.Legendre() != 1 {
		t.Error("a is not a square in Fr")
	}
	if edParams.D.Legendre() != -1 {
		t.Error("d is a square in Fr: the addition law has exceptional points")
	}
	if edCofactor.Uint64() != 8 {
		t.Errorf("cofactor %s, the subgroup check doubles three times", edCofactor)
	}
}

// edwardsCircuit checks add, double, subgroup membership and the joint
// scalar multiplication against gnark-crypto.
type edwardsCircuit struct {
	P, Q, Sum, Dbl, Mul twistededwards.Point
	S1, S2              frontend.Variable
}

func (c *edwardsCircuit) Define(api frontend.API) error {
	ed := edwards{api}
	ed.assertPrimeOrder(c.P)
	ed.assertPrimeOrder(c.Q)
	s := ed.add(c.P, c.Q)
	d := ed.double(c.P)
	m := ed.doubleScalarMul(c.P, c.Q, api.ToBinary(c.S1, 254), api.ToBinary(c.S2, 254))
	for _, eq := range [][2]twistededwards.Point{{s, c.Sum}, {d, c.Dbl}, {m, c.Mul}} {
		api.AssertIsEqual(eq[0].X, eq[1].X)
		api.AssertIsEqual(eq[0].Y, eq[1].Y)
	}
	return nil
}

func TestEdwardsGadgetsMatchGnarkCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	point := func() edbn254.PointAffine {
		var p edbn254.PointAffine
		p.ScalarMultiplicationBase(new(big.Int).SetUint64(r.Uint64()))
		return p
	}
	pt := func(p edbn254.PointAffine) twistededwards.Point {
		return twistededwards.Point{X: toBig(&p.X), Y: toBig(&p.Y)}
	}
	for i := range 4 {
		p, q := point(), point()
		if i == 0 {
			q = p // doubling through the addition law
		}
		var s1, s2 fr.Element
		s1.SetRandom()
		s2.SetRandom()
		var sum, dbl, m1, m2 edbn254.PointAffine
		sum.Add(&p, &q)
		dbl.Double(&p)
		m1.ScalarMultiplication(&p, toBig(&s1))
		m2.ScalarMultiplication(&q, toBig(&s2))
		m1.Add(&m1, &m2)
		w := &edwardsCircuit{P: pt(p), Q: pt(q), Sum: pt(sum), Dbl: pt(dbl), Mul: pt(m1), S1: s1, S2: s2}
		if err := test.IsSolved(&edwardsCircuit{}, w, ecc.BN254.ScalarField()); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		w.Mul = pt(sum)
		if err := test.IsSolved(&edwardsCircuit{}, w, ecc.BN254.ScalarField()); err == nil {
			t.Fatalf("case %d: a wrong multiple was accepted", i)
		}
	}
}

// assertBitsBelow against big.Int comparison, at and around the bound.
type belowCircuit struct {
	X     frontend.Variable
	bound *big.Int
}

func (c *belowCircuit) Define(api frontend.API) error {
	assertBitsBelow(api, api.ToBinary(c.X, c.bound.BitLen()), c.bound)
	return nil
}

func TestAssertBitsBelow(t *testing.T) {
	for _, bound := range []*big.Int{edOrder, big.NewInt(0b1011_0000), big.NewInt(1 << 10)} {
		for _, d := range []int64{-3, -1, 0, 1, 2} {
			x := new(big.Int).Add(bound, big.NewInt(d))
			if x.Sign() < 0 || x.BitLen() > bound.BitLen() {
				continue // not representable in the bound's bits: ToBinary refuses it anyway
			}
			err := test.IsSolved(&belowCircuit{bound: bound}, &belowCircuit{X: x, bound: bound}, ecc.BN254.ScalarField())
			if want := d < 0; (err == nil) != want {
				t.Errorf("%s below %s: solved %v, want %v", x, bound, err == nil, want)
			}
		}
	}
}

// The compiled v2 circuit uses exactly the hints AUDIT.md lists, and no
// commitment (api.Commit / range-check or lookup commitments), so its
// Groth16 verifier, and the Solidity export, are the plain pairing check.
func TestV2HintsAndCommitments(t *testing.T) {
	ccs, err := Compile(Capacities[0])
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ccs.GetCommitments().CommitmentIndexes()); n != 0 {
		t.Errorf("v2 circuit has %d commitments", n)
	}
	sys, ok := ccs.(*csbn254.R1CS)
	if !ok {
		t.Fatalf("compiled to %T, want a BN254 R1CS", ccs)
	}
	var names []string
	for _, name := range sys.MHintsDependencies {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{"github.com/consensys/gnark/std/math/bits.nBits", "github.com/tollgate-ai/tollgate/zk.cofactorPreimageHint"}
	if !slices.Equal(names, want) {
		t.Errorf("hints %v, want exactly %v (audit any new one in AUDIT.md)", names, want)
	}
	// And the dishonest harness sees no DivUnchecked at all in v2.
	b, _ := testBatch(t, 8, 2)
	w, _ := Assign(b)
	adv := &adversary{}
	if err := solvedV2(w, adv); err != nil {
		t.Fatal(err)
	}
	if adv.divs != 0 {
		t.Errorf("v2 performs %d DivUnchecked", adv.divs)
	}
}

// v1 receipts still verify under v1 keys; v1 proving keys are refused.
func TestV1KeysVerifyButDoNotProve(t *testing.T) {
	const capacity = 2 // the set-up is single-party and small: a few seconds
	c1, _ := newCircuitV1(capacity)
	ccs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, c1)
	if err != nil {
		t.Fatal(err)
	}
	pk, vk, err := groth16.Setup(ccs)
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(t, 1)
	b := &Batch{Capacity: capacity, ModelVersion: testModel, PublicKey: &key.PublicKey, Sequence: 3, Time: testBatchTime}
	b.Leaves = []LeafInput{{PromptTokens: 1, CompletionTokens: 2}}
	reg := v1Registry(t, testModel)
	w1 := assignV1(t, b, reg)
	signV1(t, w1, b, key)
	wit, err := frontend.NewWitness(w1, ecc.BN254.ScalarField())
	if err != nil {
		t.Fatal(err)
	}
	proof, err := groth16.Prove(ccs, pk, wit)
	if err != nil {
		t.Fatal(err)
	}
	var pbuf, vbuf bytes.Buffer
	proof.WriteTo(&pbuf)
	h := receipts.KeyHeader{Kind: "vk", Circuit: receipts.CircuitV1, Capacity: capacity, Gnark: receipts.GnarkVersion(), Curve: ecc.BN254.String(), Ceremony: CeremonyDev}
	receipts.WriteKeyHeader(&vbuf, h)
	vk.WriteTo(&vbuf)
	parsed, err := receipts.ParseVerifyingKey(vbuf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	root, _ := b.Root()
	pub := receipts.BatchPublic{Root: receipts.ElementHex(root), ModelVersion: receipts.ElementHex(testModel),
		RegistryRoot: receipts.ElementHex(reg.Root()), WorkerID: receipts.WorkerID(&key.PublicKey),
		LeafCount: 1, TotalPromptTokens: 1, TotalCompletionTokens: 2, Sequence: 3}
	enc := base64.StdEncoding.EncodeToString(pbuf.Bytes())
	if err := receipts.VerifyProof(parsed, &pub, enc); err != nil {
		t.Fatalf("v1 proof under its v1 key: %v", err)
	}
	pub.TotalPromptTokens++
	if err := receipts.VerifyProof(parsed, &pub, enc); err == nil {
		t.Fatal("tampered v1 public input verified")
	}

	// A v1 proving key is refused by the loader.
	var kbuf bytes.Buffer
	h.Kind = "pk"
	receipts.WriteKeyHeader(&kbuf, h)
	pk.WriteRawTo(&kbuf)
	if _, _, err := ReadProvingKey(&kbuf); err == nil {
		t.Fatal("a v1 proving key was loaded")
	}
}
