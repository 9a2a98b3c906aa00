package zk

// Dishonest-prover harness. A prover runs its own solver: any wire that the
// constraints leave free, it may set as it likes. gnark's test engine (and
// its R1CS solver) fill such wires with one honest choice, so a test that
// only runs them cannot see the freedom. The harness gives it back:
//
//   - dishonestAPI wraps the frontend.API a circuit's Define sees. Its
//     DivUnchecked emits exactly the constraint gnark's R1CS builder emits
//     (den · q = num) but takes q from a hint that the test controls when
//     num = den = 0, the one case that constraint leaves q free. Its
//     ToBinary goes through std/math/bits like the R1CS builder's does, so
//     the bit-decomposition hint can be replaced (test.WithReplacementHint)
//     and only the constraints decide.
//   - hint replacement (test.WithReplacementHint in the test engine,
//     solver.OverrideHint in the real R1CS solver) puts adversarial values
//     in every other hinted wire: the cofactor preimage, the bits of a
//     field element.
//
// Each attack is run against the v1 circuit (batchCircuitV1, test-only copy
// of the old statement) where it applies and against v2; the table says
// which v1 accepted.

import (
	"crypto/sha256"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	edbn254 "github.com/consensys/gnark-crypto/ecc/bn254/twistededwards"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"
	tedwards "github.com/consensys/gnark-crypto/ecc/twistededwards"
	"github.com/consensys/gnark/constraint/solver"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
	"github.com/consensys/gnark/std/math/bits"
	"github.com/consensys/gnark/test"

	"github.com/tollgate-ai/tollgate/receipts"
)

// adversary holds the values a dishonest prover puts in free wires.
type adversary struct {
	// zeroQuotients[k] is the quotient of the k-th DivUnchecked(0, 0)
	// (0 past the end, gnark's own choice).
	zeroQuotients []*big.Int
	zeroDivs      int // how many 0/0 divisions the circuit performed
	divs          int // how many DivUnchecked the circuit performed
}

type dishonestAPI struct {
	frontend.API
	adv *adversary
}

func (d dishonestAPI) DivUnchecked(num, den frontend.Variable) frontend.Variable {
	q, err := d.Compiler().NewHint(d.adv.divHint, 1, num, den)
	if err != nil {
		panic(err)
	}
	d.API.AssertIsEqual(d.API.Mul(q[0], den), num) // the R1CS builder's constraint: den · q = num
	return q[0]
}

func (d dishonestAPI) ToBinary(v frontend.Variable, n ...int) []frontend.Variable {
	nb := d.Compiler().FieldBitLen()
	if len(n) == 1 {
		nb = n[0]
	}
	return bits.ToBinary(d, v, bits.WithNbDigits(nb)) // as frontend/cs/r1cs's ToBinary
}

func (a *adversary) divHint(field *big.Int, in, out []*big.Int) error {
	a.divs++
	num, den := in[0], in[1]
	if den.Sign() != 0 {
		inv := new(big.Int).ModInverse(den, field)
		out[0].Mod(inv.Mul(inv, num), field)
		return nil
	}
	if num.Sign() == 0 {
		if a.zeroDivs < len(a.zeroQuotients) {
			out[0].Set(a.zeroQuotients[a.zeroDivs])
		}
		a.zeroDivs++
		return nil
	}
	out[0].SetUint64(0) // num/0: no q satisfies the constraint
	return nil
}

// dishonestV1 and dishonestV2 run a circuit's Define on the dishonest API.
type dishonestV1 struct {
	C   batchCircuitV1
	adv *adversary `gnark:"-"`
}

func (c *dishonestV1) Define(api frontend.API) error {
	return c.C.Define(dishonestAPI{api, c.adv})
}

type dishonestV2 struct {
	C   BatchCircuit
	adv *adversary `gnark:"-"`
}

func (c *dishonestV2) Define(api frontend.API) error {
	return c.C.Define(dishonestAPI{api, c.adv})
}

func solvedV1(w *batchCircuitV1, adv *adversary, opts ...test.TestEngineOption) error {
	c, _ := newCircuitV1(len(w.Active))
	return test.IsSolved(&dishonestV1{C: *c, adv: adv}, &dishonestV1{C: *w, adv: adv}, ecc.BN254.ScalarField(), opts...)
}

func solvedV2(w *BatchCircuit, adv *adversary, opts ...test.TestEngineOption) error {
	c, _ := NewCircuit(len(w.Active))
	return test.IsSolved(&dishonestV2{C: *c, adv: adv}, &dishonestV2{C: *w, adv: adv}, ecc.BN254.ScalarField(), opts...)
}

// v1Registry is the v1 model-version registry the attacks run against.
func v1Registry(t testing.TB, versions ...fr.Element) *receipts.Registry {
	t.Helper()
	reg, err := receipts.NewRegistry(versions)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// assignV1 is the v1 witness of b over a v1 registry, as the v1 Assign
// built it; the signature (v1 message) is left to the caller.
func assignV1(t testing.TB, b *Batch, reg *receipts.Registry) *batchCircuitV1 {
	t.Helper()
	c, err := newCircuitV1(b.Capacity)
	if err != nil {
		t.Fatal(err)
	}
	root, err := b.Root()
	if err != nil {
		t.Fatal(err)
	}
	idx, path, ok := reg.Path(b.ModelVersion)
	if !ok {
		t.Fatal("model version not in the v1 registry")
	}
	tp, tc := b.totals()
	c.Root, c.ModelVersion, c.RegistryRoot, c.WorkerID = root, b.ModelVersion, reg.Root(), receipts.WorkerIDElement(b.PublicKey)
	c.LeafCount, c.TotalPromptTokens, c.TotalCompletionTokens, c.Sequence = len(b.Leaves), tp, tc, b.Sequence
	for i := range b.Capacity {
		c.Active[i], c.RequestCommitments[i], c.PromptTokens[i], c.CompletionTokens[i] = 0, 0, 0, 0
		if i < len(b.Leaves) {
			l := b.Leaves[i]
			c.Active[i], c.RequestCommitments[i], c.PromptTokens[i], c.CompletionTokens[i] = 1, l.RequestCommitment, l.PromptTokens, l.CompletionTokens
		}
	}
	c.RegistryIndex = idx
	for i, s := range path {
		c.RegistryPath[i] = s
	}
	c.PublicKey.Assign(tedwards.BN254, b.PublicKey.Bytes())
	return c
}

// signV1 signs b's v1 message with key into w.
func signV1(t testing.TB, w *batchCircuitV1, b *Batch, key *eddsa.PrivateKey) {
	t.Helper()
	root, _ := b.Root()
	tp, tc := b.totals()
	sig, err := receipts.SignBatch(key, receipts.BatchMessage(root, b.ModelVersion, uint64(len(b.Leaves)), tp, tc, b.Sequence))
	if err != nil {
		t.Fatal(err)
	}
	w.Signature.Assign(tedwards.BN254, sig)
}

// forgedBatch is a batch of requests that never happened with 4·10⁹ prompt
// and 4·10⁹ completion tokens under the victim's (real, admitted) key. Its
// Signature is a placeholder encoding from another key; each attack puts
// its own (R, S) in the witness.
func forgedBatch(t testing.TB, victim *eddsa.PublicKey) *Batch {
	t.Helper()
	reg := testRegistry(t, victim)
	idx, path, ok := reg.Path(receipts.AdmissionLeaf(receipts.WorkerIDElement(victim), testModel))
	if !ok {
		t.Fatal("victim not admitted")
	}
	b := &Batch{Capacity: 8, ModelVersion: testModel, RegistryRoot: reg.Root(), RegistryIndex: idx, RegistryPath: path,
		PublicKey: victim, Sequence: 99, Time: testBatchTime}
	var rc fr.Element
	rc.SetUint64(0xf0f0)
	b.Leaves = []LeafInput{{RequestCommitment: rc, PromptTokens: 4_000_000_000, CompletionTokens: 4_000_000_000}}
	signBatch(t, b, testKey(t, 50)) // any valid encoding; not the victim's signature
	return b
}

// sqrtInvA is t with t² = 1/a: the free quotient that makes the three
// cofactor doublings of (0, 0) land on the identity in v1 (see
// TestV1ForgeryWithRZero).
func sqrtInvA(t testing.TB) *big.Int {
	var inv, s fr.Element
	inv.Inverse(&edParams.A)
	if s.Sqrt(&inv) == nil {
		t.Fatal("1/a is not a square")
	}
	return toBig(&s)
}

// TestV1ForgeryWithRZero plays finding 1 of issue 14: with R = (0, 0) the
// last addition in gnark's eddsa.IsValid gives (0, 0) whatever S is; the
// first cofactor doubling divides 0 by 0, and with that quotient t set to
// √(1/a) the next doublings give (0, -1) and then the identity (0, 1), so
// the check passes. v1 accepts a proof of 8·10⁹ tokens under the real
// worker's ID without its private key; v2 refuses it.
func TestV1ForgeryWithRZero(t *testing.T) {
	victim := testKey(t, 1)
	b := forgedBatch(t, &victim.PublicKey)
	s := new(big.Int).SetUint64(0xdead_beef) // any S below ℓ

	w1 := assignV1(t, b, v1Registry(t, testOtherModel, testModel))
	w1.Signature.R.X, w1.Signature.R.Y, w1.Signature.S = 0, 0, s
	adv := &adversary{zeroQuotients: []*big.Int{sqrtInvA(t)}}
	if err := solvedV1(w1, adv); err != nil {
		t.Fatalf("v1 refused the forgery (the attack no longer reproduces): %v", err)
	}
	if adv.zeroDivs != 1 {
		t.Errorf("v1 forgery used %d free 0/0 quotients, want 1", adv.zeroDivs)
	}
	// Without the adversarial quotient (gnark's honest 0) v1 refuses: the
	// forgery lives entirely in that one free wire.
	if err := solvedV1(w1, &adversary{}); err == nil {
		t.Fatal("v1 accepted R = (0, 0) with the honest quotient")
	}

	w2, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	w2.Signature.R.X, w2.Signature.R.Y, w2.Signature.S = 0, 0, s
	adv = &adversary{zeroQuotients: []*big.Int{sqrtInvA(t), sqrtInvA(t), sqrtInvA(t)}}
	err = solvedV2(w2, adv)
	if err == nil {
		t.Fatal("v2 accepted the R = (0, 0) forgery")
	}
	t.Logf("v2 refused: %s", firstLine(err))
	if adv.zeroDivs != 0 {
		t.Errorf("v2 performed %d DivUnchecked(0, 0)", adv.zeroDivs)
	}

	// Control: the same batch honestly signed by the victim solves v2 on
	// the dishonest API, so the harness itself is faithful.
	signBatch(t, b, victim)
	honest, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := solvedV2(honest, &adversary{}); err != nil {
		t.Fatalf("honest v2 witness refused on the dishonest API: %v", err)
	}
}

// smallOrderPoints are the seven non-identity points of order dividing 8.
func smallOrderPoints(t testing.TB) map[string]edbn254.PointAffine {
	t.Helper()
	var t2, t4, t8 edbn254.PointAffine
	t2.X.SetZero()
	t2.Y.SetOne()
	t2.Y.Neg(&t2.Y) // (0, -1), order 2
	t4.X.SetBigInt(sqrtInvA(t))
	t4.Y.SetZero() // (√(1/a), 0), order 4
	if !t4.IsOnCurve() {
		t.Fatal("order-4 point not on the curve")
	}
	// An order-8 point: a half of t4 (solve double(P) = t4 by brute force
	// over points P = [k]G' for a point G' of full order 8ℓ is costly;
	// instead clear ℓ from a random point until the order is 8).
	var p edbn254.PointAffine
	for y := uint64(2); ; y++ {
		p.Y.SetUint64(y)
		// x² = (1 - y²) / (a - d·y²)
		var yy, num, den, xx fr.Element
		yy.Square(&p.Y)
		num.SetOne()
		num.Sub(&num, &yy)
		den.Mul(&edParams.D, &yy)
		den.Sub(&edParams.A, &den)
		den.Inverse(&den)
		xx.Mul(&num, &den)
		if p.X.Sqrt(&xx) == nil {
			continue
		}
		var q edbn254.PointAffine
		q.ScalarMultiplication(&p, edOrder)
		var q2, q4 edbn254.PointAffine
		q2.Double(&q)
		q4.Double(&q2)
		if !q4.IsZero() { // q has order 8
			t8 = q
			break
		}
	}
	return map[string]edbn254.PointAffine{"order 2": t2, "order 4": t4, "order 8": t8}
}

// TestSignatureAttacks: every malformed (R, S) a dishonest prover could
// put in, against v1 and v2, under the real victim key and a consistent
// public digest. Only the signature differs from an honest witness.
func TestSignatureAttacks(t *testing.T) {
	victim := testKey(t, 1)
	ell := edOrder
	small := smallOrderPoints(t)

	honestSig := func(b *Batch) (r edbn254.PointAffine, s *big.Int) {
		signBatch(t, b, victim)
		var sig eddsa.Signature
		if _, err := sig.SetBytes(b.Signature); err != nil {
			t.Fatal(err)
		}
		return sig.R, new(big.Int).SetBytes(sig.S[:])
	}
	type sigCase struct {
		name      string
		make      func(b *Batch) (rx, ry, s any) // v2 witness signature
		v1        func(b *Batch, w *batchCircuitV1)
		v1Accepts bool
		opts      []test.TestEngineOption // hint replacements (v2)
	}
	tests := []sigCase{
		{name: "R = (0,0), any S (issue 14 finding 1)",
			make: func(*Batch) (any, any, any) { return 0, 0, 12345 },
			v1: func(_ *Batch, w *batchCircuitV1) {
				w.Signature.R.X, w.Signature.R.Y, w.Signature.S = 0, 0, 12345
			}, v1Accepts: true},
		{name: "R off the curve",
			make: func(b *Batch) (any, any, any) { r, s := honestSig(b); return toBig(&r.X), 5, s }},
		{name: "S + ℓ (malleated scalar)",
			make: func(b *Batch) (any, any, any) {
				r, s := honestSig(b)
				return toBig(&r.X), toBig(&r.Y), new(big.Int).Add(s, ell)
			},
			v1: func(b *Batch, w *batchCircuitV1) {
				signV1(t, w, b, victim)
				w.Signature.S = new(big.Int).Add(new(big.Int).SetBytes(w.Signature.S.([]byte)), ell)
			}},
		{name: "S = ℓ", make: func(b *Batch) (any, any, any) { r, _ := honestSig(b); return toBig(&r.X), toBig(&r.Y), ell }},
		{name: "R = identity", make: func(*Batch) (any, any, any) { return 0, 1, 0 }},
		{name: "adversarial cofactor preimage for an honest R", make: func(b *Batch) (any, any, any) {
			r, s := honestSig(b)
			return toBig(&r.X), toBig(&r.Y), s
		}, opts: []test.TestEngineOption{test.WithReplacementHint(solver.GetHintID(cofactorPreimageHint), func(f *big.Int, in, out []*big.Int) error {
			if in[0].Cmp(toBig(&victim.PublicKey.A.X)) == 0 {
				return cofactorPreimageHint(f, in, out) // the key's preimage stays honest
			}
			// for R: an on-curve point that is not a preimage of R
			out[0].Set(toBig(&edParams.Base.X))
			out[1].Set(toBig(&edParams.Base.Y))
			return nil
		})}},
	}
	for name, p := range small {
		tests = append(tests,
			sigCase{name: "R of " + name, make: func(*Batch) (any, any, any) { return toBig(&p.X), toBig(&p.Y), 7 }},
			sigCase{name: "R + a point of " + name, make: func(b *Batch) (any, any, any) {
				r, s := honestSig(b)
				r.Add(&r, &p)
				return toBig(&r.X), toBig(&r.Y), s
			}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := forgedBatch(t, &victim.PublicKey)
			if tt.v1 != nil {
				w1 := assignV1(t, b, v1Registry(t, testOtherModel, testModel))
				tt.v1(b, w1)
				err := solvedV1(w1, &adversary{zeroQuotients: []*big.Int{sqrtInvA(t)}})
				if tt.v1Accepts && err != nil {
					t.Errorf("v1 refused (expected the old circuit to accept): %v", err)
				}
				if !tt.v1Accepts && err == nil {
					t.Error("v1 accepted")
				}
			}
			rx, ry, s := tt.make(b)
			w2, err := Assign(b)
			if err != nil {
				t.Fatal(err)
			}
			w2.Signature.R.X, w2.Signature.R.Y, w2.Signature.S = rx, ry, s
			err = solvedV2(w2, &adversary{zeroQuotients: []*big.Int{sqrtInvA(t)}}, tt.opts...)
			if err == nil {
				t.Fatal("v2 accepted")
			}
			t.Logf("v2 refused: %s", firstLine(err))
		})
	}
}

// TestAdmissionAttacks: issue 14 finding 2 (any key can sign) and its
// relatives. Each batch is honestly signed by the key it names, with a
// consistent digest; only admission is wrong.
func TestAdmissionAttacks(t *testing.T) {
	victim := testKey(t, 1)
	stranger := testKey(t, 7) // a key nobody admitted
	third := receipts.ModelVersionCommitment("third", sha256.Sum256([]byte("third")))
	otherWorker := receipts.WorkerIDElement(&testKey(t, 99).PublicKey)

	tests := []struct {
		name      string
		key       *eddsa.PrivateKey
		model     fr.Element
		registry  []fr.Element // admission leaves; the batch uses the path of leaf pathOf
		pathOf    int
		v1Models  []fr.Element // the v1 registry the same batch is tried against
		v1Accepts bool
	}{
		{name: "unadmitted key (the model is admitted for the victim)", key: stranger, model: testModel,
			registry: []fr.Element{receipts.AdmissionLeaf(receipts.WorkerIDElement(&victim.PublicKey), testModel)},
			v1Models: []fr.Element{testModel}, v1Accepts: true},
		{name: "model admitted only for another worker", key: victim, model: third,
			registry: []fr.Element{receipts.AdmissionLeaf(otherWorker, third), receipts.AdmissionLeaf(receipts.WorkerIDElement(&victim.PublicKey), testModel)},
			v1Models: []fr.Element{testModel, third}, v1Accepts: true},
		{name: "model version never registered", key: victim, model: third,
			registry: []fr.Element{receipts.AdmissionLeaf(receipts.WorkerIDElement(&victim.PublicKey), testModel)}, pathOf: 0},
		{name: "model version zero", key: victim, model: fr.Element{},
			registry: []fr.Element{receipts.AdmissionLeaf(receipts.WorkerIDElement(&victim.PublicKey), fr.Element{})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := receipts.NewAdmissionRegistry(tt.registry)
			if err != nil {
				t.Fatal(err)
			}
			_, path, _ := reg.Path(tt.registry[tt.pathOf])
			b := &Batch{Capacity: 8, ModelVersion: tt.model, RegistryRoot: reg.Root(), RegistryIndex: uint64(tt.pathOf), RegistryPath: path,
				PublicKey: &tt.key.PublicKey, Sequence: 1, Time: testBatchTime}
			var rc fr.Element
			rc.SetUint64(77)
			b.Leaves = []LeafInput{{RequestCommitment: rc, PromptTokens: 4_000_000_000, CompletionTokens: 4_000_000_000}}
			signBatch(t, b, tt.key)
			if tt.v1Models != nil {
				w1 := assignV1(t, b, v1Registry(t, tt.v1Models...))
				signV1(t, w1, b, tt.key)
				err := solvedV1(w1, &adversary{})
				if tt.v1Accepts && err != nil {
					t.Errorf("v1 refused (expected the old circuit to accept): %v", err)
				}
				if !tt.v1Accepts && err == nil {
					t.Error("v1 accepted")
				}
			}
			w2, err := Assign(b)
			if err != nil {
				t.Fatal(err)
			}
			// try every index: the pair is at none of them
			for idx := range len(tt.registry) {
				_, p, _ := reg.Path(tt.registry[idx])
				w2.RegistryIndex = idx
				for i, s := range p {
					w2.RegistryPath[i] = s
				}
				err := solvedV2(w2, &adversary{})
				if err == nil {
					t.Fatalf("v2 accepted with the path of leaf %d", idx)
				}
				t.Logf("v2 refused (path of leaf %d): %s", idx, firstLine(err))
			}
		})
	}
}

// publicOf reads the public values back out of a v2 assignment, so a
// tampered witness can carry a digest consistent with its tampering (the
// verifier sees only the digest of the claim).
func publicOf(t testing.TB, c *BatchCircuit) receipts.BatchPublic {
	t.Helper()
	el := func(v any) fr.Element {
		var e fr.Element
		if _, err := e.SetInterface(v); err != nil {
			t.Fatal(err)
		}
		return e
	}
	u := func(v any) uint64 {
		e := el(v)
		if !e.IsUint64() {
			t.Fatalf("%v is not a uint64", v)
		}
		return e.Uint64()
	}
	var pub edbn254.PointAffine
	pub.X, pub.Y = el(c.PublicKey.A.X), el(c.PublicKey.A.Y)
	bt := receipts.BatchTime(time.Unix(0, int64(u(c.BatchTime))))
	return receipts.BatchPublic{
		Root: receipts.ElementHex(el(c.Root)), ModelVersion: receipts.ElementHex(el(c.ModelVersion)),
		RegistryRoot: receipts.ElementHex(el(c.RegistryRoot)), WorkerID: receipts.WorkerID(&eddsa.PublicKey{A: pub}),
		LeafCount: u(c.LeafCount), TotalPromptTokens: u(c.TotalPromptTokens), TotalCompletionTokens: u(c.TotalCompletionTokens),
		Sequence: u(c.Sequence), Time: bt,
	}
}

func redigest(t testing.TB, c *BatchCircuit) {
	t.Helper()
	pub := publicOf(t, c)
	d, err := receipts.PublicDigestV2(&pub)
	if err != nil {
		t.Fatal(err)
	}
	c.PublicDigest = d
}

// TestTamperWithConsistentDigest: a dishonest prover changes one value and
// folds the changed claim into the public digest; the statement's own
// checks must refuse each. (TestBatchCircuitTampering changes values under
// the honest digest.)
func TestTamperWithConsistentDigest(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(c *BatchCircuit)
	}{
		{"total prompt + 1", func(c *BatchCircuit) { c.TotalPromptTokens = uint64(10+11+12+13+14) + 1 }},
		{"total completion + 1", func(c *BatchCircuit) { c.TotalCompletionTokens = uint64(100+101+102+103+104) + 1 }},
		{"leaf count 4 of 5", func(c *BatchCircuit) { c.LeafCount = 4 }},
		{"leaf count above capacity", func(c *BatchCircuit) {
			c.LeafCount = 9
			for i := range c.Active {
				c.Active[i] = 1
			}
		}},
		{"leaf commitment", func(c *BatchCircuit) { c.RequestCommitments[0] = 5 }},
		{"leaf tokens moved between leaves", func(c *BatchCircuit) { c.PromptTokens[0], c.PromptTokens[1] = 11, 10 }},
		{"padding slot carries tokens", func(c *BatchCircuit) { c.PromptTokens[6] = 1; c.TotalPromptTokens = uint64(10+11+12+13+14) + 1 }},
		{"sequence", func(c *BatchCircuit) { c.Sequence = 8 }},
		{"batch time", func(c *BatchCircuit) { c.BatchTime = testBatchTime.UnixNano() + 1 }},
		{"root", func(c *BatchCircuit) { c.Root = 1 }},
		{"registry root", func(c *BatchCircuit) { c.RegistryRoot = 1 }},
		{"model version", func(c *BatchCircuit) { c.ModelVersion = testOtherModel }}, // admitted, but not what was signed
		{"another key (same signature)", func(c *BatchCircuit) {
			other := testKey(t, 2)
			c.PublicKey.Assign(tedwards.BN254, other.PublicKey.Bytes())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := testBatch(t, 8, 5)
			w, err := Assign(b)
			if err != nil {
				t.Fatal(err)
			}
			tt.tamper(w)
			redigest(t, w)
			c, _ := NewCircuit(8)
			err = test.IsSolved(c, w, ecc.BN254.ScalarField())
			if err == nil {
				t.Fatal("tampered witness with a consistent digest solved the circuit")
			}
			t.Logf("refused: %s", firstLine(err))
		})
	}
	// Control: redigest of an untampered witness is the honest digest.
	b, _ := testBatch(t, 8, 5)
	w, _ := Assign(b)
	want := w.PublicDigest
	redigest(t, w)
	if w.PublicDigest != want {
		t.Fatal("redigest disagrees with Assign")
	}
}

// nBitsHint is std/math/bits' decomposition hint, found by name.
func nBitsHintID(t testing.TB) solver.HintID {
	t.Helper()
	for _, h := range solver.GetRegisteredHints() {
		if strings.HasSuffix(solver.GetHintName(h), "bits.nBits") {
			return solver.GetHintID(h)
		}
	}
	t.Fatal("std/math/bits nBits hint not registered")
	return 0
}

// nonCanonicalBits returns a replacement for nBits that decomposes target
// as target + r (when that fits the requested bits) and everything else
// honestly.
func nonCanonicalBits(target *big.Int) solver.Hint {
	return func(field *big.Int, in, out []*big.Int) error {
		v := new(big.Int).Set(in[0])
		if v.Cmp(target) == 0 {
			if alt := new(big.Int).Add(v, field); alt.BitLen() <= len(out) {
				v = alt
			}
		}
		for i := range out {
			out[i].SetUint64(uint64(v.Bit(i)))
		}
		return nil
	}
}

// canonCircuit decomposes X into 254 bits and asserts the top one is set:
// x + r (≥ r > 2^253) has it, a canonical x < 2^253 does not.
type canonCircuit struct {
	X      frontend.Variable
	strict bool
}

func (c *canonCircuit) Define(api frontend.API) error {
	var b []frontend.Variable
	if c.strict {
		b = fieldBitsBE(api, c.X)[2:] // the circuit's own decomposition, big-endian
		api.AssertIsEqual(b[0], 1)
		return nil
	}
	le := bits.ToBinary(api, c.X, bits.WithNbDigits(254), bits.OmitModulusCheck())
	api.AssertIsEqual(le[253], 1)
	return nil
}

// TestNonCanonicalDecompositionRefused drives the real R1CS solver with the
// bit-decomposition hint replaced: the digest's field encodings must be the
// canonical ones. Without the modulus check, x + r passes for x.
func TestNonCanonicalDecompositionRefused(t *testing.T) {
	id := nBitsHintID(t)
	x := big.NewInt(5)
	w := &canonCircuit{X: x}
	for _, strict := range []bool{false, true} {
		ccs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, &canonCircuit{strict: strict})
		if err != nil {
			t.Fatal(err)
		}
		wit, _ := frontend.NewWitness(w, ecc.BN254.ScalarField())
		err = ccs.IsSolved(wit, solver.OverrideHint(id, nonCanonicalBits(x)))
		if !strict && err != nil {
			t.Fatalf("without the modulus check the non-canonical bits should pass: %v", err)
		}
		if strict && err == nil {
			t.Fatal("fieldBitsBE accepted x + r")
		}
	}

	// The full circuit, the root encoded as root + r in a digest computed
	// over those bytes.
	b, _ := testBatch(t, 8, 3)
	r := ecc.BN254.ScalarField()
	limit := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 254), r)
	var root fr.Element
	for i := uint64(0); ; i++ { // find a batch whose root has a 254-bit alias
		b.Leaves[0].RequestCommitment.SetUint64(1000 + i)
		root, _ = b.Root()
		if toBig(&root).Cmp(limit) < 0 {
			break
		}
	}
	signBatch(t, b, testKey(t, 1))
	a, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Public()
	pre, _ := receipts.PublicPreimageV2(&pub)
	alias := new(big.Int).Add(toBig(&root), r).FillBytes(make([]byte, 32))
	copy(pre[:32], alias)
	sum := sha256.Sum256(pre)
	sum[0] &= 0x1f
	a.PublicDigest = new(big.Int).SetBytes(sum[:])
	ccs, err := Compile(8)
	if err != nil {
		t.Fatal(err)
	}
	wit, err := frontend.NewWitness(a, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := ccs.IsSolved(wit, solver.OverrideHint(id, nonCanonicalBits(toBig(&root)))); err == nil {
		t.Fatal("v2 accepted a digest over a non-canonical root encoding")
	}
	// Control: the honest witness solves the real solver with the honest hint.
	honest, _ := Assign(b)
	wit, _ = frontend.NewWitness(honest, r)
	if err := ccs.IsSolved(wit); err != nil {
		t.Fatalf("honest witness refused by the R1CS solver: %v", err)
	}
}

// firstLine is an error's first line (the test engine appends a stack).
func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}
