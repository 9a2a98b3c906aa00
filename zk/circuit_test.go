package zk

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/std/permutation/poseidon2"
	"github.com/consensys/gnark/test"

	"github.com/tollgate-ai/tollgate/receipts"
)

// testKey is a deterministic worker key.
func testKey(t testing.TB, seed uint64) *eddsa.PrivateKey {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	key, err := eddsa.GenerateKey(readerFunc(func(p []byte) (int, error) {
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		return len(p), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

var (
	testModel      = receipts.ModelVersionCommitment("llama3-8b", sha256.Sum256([]byte("weights")))
	testOtherModel = receipts.ModelVersionCommitment("other", sha256.Sum256([]byte("other")))
	testBatchTime  = time.Unix(1800000000, 123456789).UTC()
)

// testRegistry admits the worker key for testModel, next to other pairs
// (another key for testModel, the worker for another model).
func testRegistry(t testing.TB, worker *eddsa.PublicKey) *receipts.AdmissionRegistry {
	t.Helper()
	wid := receipts.WorkerIDElement(worker)
	otherWorker := receipts.WorkerIDElement(&testKey(t, 99).PublicKey)
	reg, err := receipts.NewAdmissionRegistry([]fr.Element{
		receipts.AdmissionLeaf(otherWorker, testModel),
		receipts.AdmissionLeaf(wid, testOtherModel),
		receipts.AdmissionLeaf(wid, testModel),
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// testBatch builds a signed batch of n leaves at the given capacity.
func testBatch(t testing.TB, capacity, n int) (*Batch, *eddsa.PrivateKey) {
	t.Helper()
	key := testKey(t, 1)
	reg := testRegistry(t, &key.PublicKey)
	idx, path, ok := reg.Path(receipts.AdmissionLeaf(receipts.WorkerIDElement(&key.PublicKey), testModel))
	if !ok {
		t.Fatal("worker not admitted")
	}
	b := &Batch{Capacity: capacity, ModelVersion: testModel, RegistryRoot: reg.Root(), RegistryIndex: idx, RegistryPath: path,
		PublicKey: &key.PublicKey, Sequence: 7, Time: testBatchTime}
	for i := range n {
		var rc fr.Element
		rc.SetUint64(uint64(1000 + i))
		b.Leaves = append(b.Leaves, LeafInput{RequestCommitment: rc, PromptTokens: uint64(10 + i), CompletionTokens: uint64(100 + i)})
	}
	signBatch(t, b, key)
	return b, key
}

func signBatch(t testing.TB, b *Batch, key *eddsa.PrivateKey) {
	t.Helper()
	msg, err := b.Message()
	if err != nil {
		t.Fatal(err)
	}
	if b.Signature, err = receipts.SignBatch(key, msg); err != nil {
		t.Fatal(err)
	}
}

func TestBatchCircuitSolved(t *testing.T) {
	for _, n := range []int{1, 5, 8} {
		b, _ := testBatch(t, 8, n)
		w, err := Assign(b)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := NewCircuit(8)
		if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err != nil {
			t.Errorf("%d leaves: %v", n, err)
		}
	}
}

func TestBatchCircuitTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(c *BatchCircuit)
	}{
		{"public digest", func(c *BatchCircuit) { c.PublicDigest = 12345 }},
		{"root", func(c *BatchCircuit) { c.Root = 12345 }},
		{"model version", func(c *BatchCircuit) { c.ModelVersion = 42 }},
		{"registry root", func(c *BatchCircuit) { c.RegistryRoot = 42 }},
		{"registry path", func(c *BatchCircuit) { c.RegistryPath[3] = 42 }},
		{"registry index", func(c *BatchCircuit) { c.RegistryIndex = 0 }},
		{"leaf count", func(c *BatchCircuit) { c.LeafCount = 4 }},
		{"total prompt", func(c *BatchCircuit) { c.TotalPromptTokens = 1 }},
		{"total completion", func(c *BatchCircuit) { c.TotalCompletionTokens = 1 }},
		{"sequence", func(c *BatchCircuit) { c.Sequence = 8 }},
		{"batch time", func(c *BatchCircuit) { c.BatchTime = testBatchTime.UnixNano() + 1 }},
		{"leaf commitment", func(c *BatchCircuit) { c.RequestCommitments[2] = 1 }},
		{"leaf prompt tokens", func(c *BatchCircuit) { c.PromptTokens[1] = 999 }},
		{"leaf completion tokens", func(c *BatchCircuit) { c.CompletionTokens[1] = 1 }},
		{"padding tokens", func(c *BatchCircuit) { c.PromptTokens[6] = 1 }},
		{"gap in active slots", func(c *BatchCircuit) { c.Active[2], c.Active[5] = 0, 1 }},
		{"signature S", func(c *BatchCircuit) { c.Signature.S = 1 }},
		{"signature R", func(c *BatchCircuit) { c.Signature.R.X = 1 }},
		{"identity public key", func(c *BatchCircuit) { c.PublicKey.A.X, c.PublicKey.A.Y = 0, 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := testBatch(t, 8, 5)
			w, err := Assign(b)
			if err != nil {
				t.Fatal(err)
			}
			tt.tamper(w)
			c, _ := NewCircuit(8)
			if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err == nil {
				t.Error("tampered witness solved the circuit")
			}
		})
	}
}

func TestBatchCircuitOtherSigner(t *testing.T) {
	b, _ := testBatch(t, 8, 3)
	signBatch(t, b, testKey(t, 2)) // signed by a key whose hash is not WorkerID
	w, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewCircuit(8)
	if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err == nil {
		t.Error("batch signed by another key solved the circuit")
	}
}

func TestTokenOverflowRejected(t *testing.T) {
	b, _ := testBatch(t, 8, 2)
	w, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	// Move 2^32 completion tokens into the prompt slot's carry: same packed value, wrong split.
	w.PromptTokens[0] = uint64(10) - 1
	w.CompletionTokens[0] = uint64(100) + 1<<32
	c, _ := NewCircuit(8)
	if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err == nil {
		t.Error("completion count above 32 bits solved the circuit")
	}
}

// hashCircuit computes the in-circuit counterparts of receipts' Compress and
// HashElements (the leaf and registry hashes are covered by the batch
// circuit tests, whose roots are computed natively).
type hashCircuit struct {
	L, R, Compressed   frontend.Variable
	A, B, D, E, MDHash frontend.Variable
}

func (h *hashCircuit) Define(api frontend.API) error {
	perm, err := poseidon2.NewPoseidon2(api)
	if err != nil {
		return err
	}
	api.AssertIsEqual(perm.Compress(h.L, h.R), h.Compressed)
	var state frontend.Variable = 0
	for _, e := range []frontend.Variable{h.A, h.B, h.D, h.E} {
		state = perm.Compress(state, e)
	}
	api.AssertIsEqual(state, h.MDHash)
	return nil
}

func TestNativeAndCircuitHashesAgree(t *testing.T) {
	var l, r, a, b, d, e fr.Element
	l.SetUint64(3)
	r.SetRandom()
	a.SetRandom()
	b.SetUint64(5)
	d.SetRandom()
	e.SetUint64(receipts.TagBatchV2)
	w := &hashCircuit{L: l, R: r, Compressed: receipts.Compress(l, r), A: a, B: b, D: d, E: e, MDHash: receipts.HashElements(a, b, d, e)}
	if err := test.IsSolved(&hashCircuit{}, w, ecc.BN254.ScalarField()); err != nil {
		t.Fatal(err)
	}
	bad := *w
	bad.MDHash = receipts.HashElements(a, b, d)
	if err := test.IsSolved(&hashCircuit{}, &bad, ecc.BN254.ScalarField()); err == nil {
		t.Fatal("wrong hash solved")
	}
}
