// Package zk holds Tollgate's batch circuit (gnark, Groth16 on BN254): the
// circuit with its capacity fixed when it is built, the witness assignment
// beside it, key set-up (development and MPC ceremony), key storage with a
// header naming circuit, capacity and gnark version, proving, verifying and
// Solidity export. It depends only on package receipts and gnark.
//
// The circuit is version 2 (receipts.CircuitV2); AUDIT.md says how each of
// its inputs is constrained and which test shows it. Version 1 receipts
// still verify with their own keys (receipts.VerifyProof picks the public
// witness by the key's circuit); nothing new is proven under v1.
package zk

import (
	"fmt"
	"math/big"

	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/std/algebra/native/twistededwards"
	"github.com/consensys/gnark/std/permutation/poseidon2"
	"github.com/consensys/gnark/std/signature/eddsa"

	"github.com/tollgate-ai/tollgate/receipts"
)

// CircuitID names the statement; it is stored in every key header and in
// receipts, and changes whenever the constraints change.
const CircuitID = receipts.CircuitV2

// Capacities are the batch sizes keys are built for, smallest first.
var Capacities = []int{8, 64, 256, 1024}

// BatchCircuit (v2) proves, for one worker and one model version, that:
//   - PublicDigest = receipts.PublicDigestV2 of (Root, ModelVersion,
//     RegistryRoot, WorkerID, LeafCount, TotalPromptTokens,
//     TotalCompletionTokens, Sequence, BatchTime), by an in-circuit SHA-256
//     over canonical encodings (field elements < r, integers < 2^64);
//   - the first LeafCount of Capacity slots hold Leaf(commitment, prompt,
//     completion) and the rest are zero, together hashing to Root, with
//     1 ≤ LeafCount ≤ Capacity;
//   - every prompt and completion count fits in 32 bits and they sum to the
//     totals;
//   - AdmissionLeaf(WorkerID, ModelVersion) is in the admission registry
//     with root RegistryRoot, and ModelVersion ≠ 0;
//   - WorkerID = H(A.X, A.Y) for an EdDSA key A of prime order, and A signed
//     BatchMessageV2(Root, ModelVersion, totals, Sequence, BatchTime) with a
//     signature (R, S): R of prime order, S < ℓ, [S]B = R + [H(R, A, msg)]A.
//
// Only PublicDigest is public; everything else is secret and bound to the
// public values through the digest.
type BatchCircuit struct {
	// public inputs
	PublicDigest frontend.Variable `gnark:",public"`

	// secret inputs: the public values the digest commits to
	Root                  frontend.Variable
	ModelVersion          frontend.Variable
	RegistryRoot          frontend.Variable
	LeafCount             frontend.Variable
	TotalPromptTokens     frontend.Variable
	TotalCompletionTokens frontend.Variable
	Sequence              frontend.Variable
	BatchTime             frontend.Variable // Unix nanoseconds

	// secret inputs: the batch
	Active             []frontend.Variable // 1 for the first LeafCount slots, then 0
	RequestCommitments []frontend.Variable
	PromptTokens       []frontend.Variable
	CompletionTokens   []frontend.Variable
	RegistryIndex      frontend.Variable
	RegistryPath       [receipts.RegistryDepthV2]frontend.Variable
	PublicKey          eddsa.PublicKey
	Signature          eddsa.Signature
}

// NewCircuit returns an empty circuit of the given capacity (a power of two
// of at least 2), ready for frontend.Compile.
func NewCircuit(capacity int) (*BatchCircuit, error) {
	if capacity < 2 || capacity&(capacity-1) != 0 {
		return nil, fmt.Errorf("capacity %d is not a power of two >= 2", capacity)
	}
	return &BatchCircuit{
		Active:             make([]frontend.Variable, capacity),
		RequestCommitments: make([]frontend.Variable, capacity),
		PromptTokens:       make([]frontend.Variable, capacity),
		CompletionTokens:   make([]frontend.Variable, capacity),
	}, nil
}

// Define declares the constraints.
func (c *BatchCircuit) Define(api frontend.API) error {
	n := len(c.Active)
	if n < 2 || n&(n-1) != 0 || len(c.RequestCommitments) != n || len(c.PromptTokens) != n || len(c.CompletionTokens) != n {
		return fmt.Errorf("inconsistent circuit capacity %d", n)
	}
	perm, err := poseidon2.NewPoseidon2(api)
	if err != nil {
		return err
	}
	hashElements := func(elems ...frontend.Variable) frontend.Variable {
		var state frontend.Variable = 0
		for _, e := range elems {
			state = perm.Compress(state, e)
		}
		return state
	}

	// Slots: Active is a non-increasing run of booleans starting with 1, so
	// LeafCount = Σ Active is between 1 and the capacity.
	api.AssertIsEqual(c.Active[0], 1)
	var count frontend.Variable = 0
	for i, a := range c.Active {
		api.AssertIsBoolean(a)
		if i > 0 {
			// a_i = 1 implies a_{i-1} = 1
			api.AssertIsEqual(api.Mul(a, api.Sub(1, c.Active[i-1])), 0)
		}
		count = api.Add(count, a)
	}
	api.AssertIsEqual(count, c.LeafCount)

	// Leaves and totals.
	leafTag := new(big.Int).Lsh(new(big.Int).SetUint64(receipts.TagLeaf), 64)
	two32 := new(big.Int).Lsh(big.NewInt(1), 32)
	leaves := make([]frontend.Variable, n)
	var totalPrompt, totalCompletion frontend.Variable = 0, 0
	for i := range n {
		p, cpl := c.PromptTokens[i], c.CompletionTokens[i]
		// tokens = p·2^32 + c, range-checked to 64 bits with p read back
		// from its top 32 bits: both fit in 32 bits and the packing is
		// injective.
		bits := api.ToBinary(api.Add(api.Mul(p, two32), cpl), 2*receipts.TokenBits)
		api.AssertIsEqual(api.FromBinary(bits[receipts.TokenBits:]...), p)
		packed := api.Add(leafTag, api.FromBinary(bits...))
		inactive := api.Sub(1, c.Active[i])
		api.AssertIsEqual(api.Mul(p, inactive), 0)
		api.AssertIsEqual(api.Mul(cpl, inactive), 0)
		leaves[i] = api.Select(c.Active[i], perm.Compress(c.RequestCommitments[i], packed), 0)
		totalPrompt = api.Add(totalPrompt, p)
		totalCompletion = api.Add(totalCompletion, cpl)
	}
	api.AssertIsEqual(totalPrompt, c.TotalPromptTokens)
	api.AssertIsEqual(totalCompletion, c.TotalCompletionTokens)

	// Batch root.
	for len(leaves) > 1 {
		next := make([]frontend.Variable, len(leaves)/2)
		for i := range next {
			next[i] = perm.Compress(leaves[2*i], leaves[2*i+1])
		}
		leaves = next
	}
	api.AssertIsEqual(leaves[0], c.Root)

	// Worker key: on the curve, of prime order; its hash is the worker ID.
	ed := edwards{api}
	ed.assertPrimeOrder(c.PublicKey.A)
	workerID := hashElements(c.PublicKey.A.X, c.PublicKey.A.Y)

	// Admission: (worker, model version) is in the registry, and the model
	// version is not the zero padding.
	api.AssertIsDifferent(c.ModelVersion, 0)
	idx := api.ToBinary(c.RegistryIndex, receipts.RegistryDepthV2)
	cur := hashElements(receipts.TagAdmission, workerID, c.ModelVersion)
	for d := range receipts.RegistryDepthV2 {
		left := api.Select(idx[d], c.RegistryPath[d], cur)
		right := api.Select(idx[d], cur, c.RegistryPath[d])
		cur = perm.Compress(left, right)
	}
	api.AssertIsEqual(cur, c.RegistryRoot)

	// The one public input: SHA-256 of the 168-byte preimage.
	var pre []frontend.Variable
	for _, f := range []frontend.Variable{c.Root, c.ModelVersion, c.RegistryRoot, workerID} {
		pre = append(pre, fieldBitsBE(api, f)...)
	}
	u64s := []frontend.Variable{c.LeafCount, c.TotalPromptTokens, c.TotalCompletionTokens, c.Sequence, c.BatchTime}
	for _, v := range u64s {
		pre = append(pre, uintBitsBE(api, v, 64)...)
	}
	digest := sha256Bits(api, pre)
	var folded frontend.Variable = 0
	for _, b := range digest[3:] { // top three bits cleared
		folded = api.Add(api.Mul(folded, 2), b)
	}
	api.AssertIsEqual(folded, c.PublicDigest)

	// Signature over BatchMessageV2. LeafCount and the totals are below
	// 2^64 (range-checked above), so the packing is injective.
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	two128 := new(big.Int).Lsh(big.NewInt(1), 128)
	totals := api.Add(api.Mul(c.LeafCount, two128), api.Mul(c.TotalPromptTokens, two64), c.TotalCompletionTokens)
	msg := hashElements(receipts.TagBatchV2, c.Root, c.ModelVersion, totals, c.Sequence, c.BatchTime)
	verifySignature(api, ed, hashElements, c.PublicKey.A, c.Signature, msg)
	return nil
}

// verifySignature constrains (R, S) to be a valid EdDSA signature by the
// prime-order key a over msg, as gnark-crypto's eddsa signs it
// (hash = Poseidon2 Merkle–Damgård over R.X, R.Y, A.X, A.Y, msg):
// R of prime order, S < ℓ, and [S]B - [h]A = R exactly. With A, B and R in
// the prime-order subgroup this is equivalent to gnark-crypto's cofactored
// check [8][S]B = [8](R + [h]A), since [8] is injective on that subgroup.
func verifySignature(api frontend.API, ed edwards, hashElements func(...frontend.Variable) frontend.Variable, a twistededwards.Point, sig eddsa.Signature, msg frontend.Variable) {
	ed.assertPrimeOrder(sig.R)
	sBits := api.ToBinary(sig.S, edOrder.BitLen())
	assertBitsBelow(api, sBits, edOrder)
	h := hashElements(sig.R.X, sig.R.Y, a.X, a.Y, msg)
	hBits := api.ToBinary(h, api.Compiler().FieldBitLen()) // strict: the canonical bits of h < r
	for len(sBits) < len(hBits) {
		sBits = append(sBits, 0)
	}
	q := ed.doubleScalarMul(edBase, ed.neg(a), sBits, hBits)
	api.AssertIsEqual(q.X, sig.R.X)
	api.AssertIsEqual(q.Y, sig.R.Y)
}

// fieldBitsBE is the 256-bit big-endian encoding of a field element: its
// canonical 254-bit decomposition (api.ToBinary at the field's bit length
// also asserts the bits are at most r-1, so x+r cannot pass for x) under
// two zero bits.
func fieldBitsBE(api frontend.API, x frontend.Variable) []frontend.Variable {
	le := api.ToBinary(x, api.Compiler().FieldBitLen())
	out := make([]frontend.Variable, 0, 256)
	for range 256 - len(le) {
		out = append(out, 0)
	}
	for i := len(le) - 1; i >= 0; i-- {
		out = append(out, le[i])
	}
	return out
}

// uintBitsBE range-checks x below 2^n and returns its n bits big-endian.
func uintBitsBE(api frontend.API, x frontend.Variable, n int) []frontend.Variable {
	le := api.ToBinary(x, n)
	out := make([]frontend.Variable, n)
	for i := range le {
		out[n-1-i] = le[i]
	}
	return out
}

var _ frontend.Circuit = (*BatchCircuit)(nil)
