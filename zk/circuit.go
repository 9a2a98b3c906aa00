// Package zk holds Tollgate's batch circuit (gnark, Groth16 on BN254): the
// circuit with its capacity fixed when it is built, the witness assignment
// beside it, key set-up (development and MPC ceremony), key storage with a
// header naming circuit, capacity and gnark version, proving, verifying and
// Solidity export. It depends only on package receipts and gnark.
package zk

import (
	"fmt"
	"math/big"

	tedwards "github.com/consensys/gnark-crypto/ecc/twistededwards"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/std/algebra/native/twistededwards"
	p2hash "github.com/consensys/gnark/std/hash/poseidon2"
	"github.com/consensys/gnark/std/permutation/poseidon2"
	"github.com/consensys/gnark/std/signature/eddsa"

	"github.com/tollgate-ai/tollgate/receipts"
)

// CircuitID names the statement; it is stored in every key header and in
// receipts, and changes whenever the constraints change.
const CircuitID = "tollgate-batch-v1"

// Capacities are the batch sizes keys are built for, smallest first.
var Capacities = []int{8, 64, 256, 1024}

// BatchCircuit proves, for one worker and one model version, that:
//   - the first LeafCount of Capacity leaves are Leaf(commitment, prompt,
//     completion) and the rest are zero, and together they hash to Root;
//   - every prompt and completion count fits in 32 bits and they sum to the
//     totals;
//   - ModelVersion is in the registry tree with root RegistryRoot;
//   - the EdDSA key whose Poseidon2 hash is WorkerID (on the curve, not of
//     small order) signed BatchMessage(Root, ModelVersion, totals, Sequence).
//
// Every leaf under Root is tied to ModelVersion by this proof (the leaf
// itself does not repeat it; see receipts.Leaf).
type BatchCircuit struct {
	// public inputs (order is the public witness order; see receipts.BatchPublic)
	Root                  frontend.Variable `gnark:",public"`
	ModelVersion          frontend.Variable `gnark:",public"`
	RegistryRoot          frontend.Variable `gnark:",public"`
	WorkerID              frontend.Variable `gnark:",public"`
	LeafCount             frontend.Variable `gnark:",public"`
	TotalPromptTokens     frontend.Variable `gnark:",public"`
	TotalCompletionTokens frontend.Variable `gnark:",public"`
	Sequence              frontend.Variable `gnark:",public"`

	// secret inputs
	Active             []frontend.Variable // 1 for the first LeafCount slots, then 0
	RequestCommitments []frontend.Variable
	PromptTokens       []frontend.Variable
	CompletionTokens   []frontend.Variable
	RegistryIndex      frontend.Variable
	RegistryPath       [receipts.RegistryDepth]frontend.Variable
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

	// Slots: Active is a non-increasing run of ones, at least one, summing to LeafCount.
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
		// tokens = p·2^32 + c, range-checked to 64 bits with p and c read back
		// from its bits: both fit in 32 bits and the packing is injective.
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

	// Model version is registered (and not the zero padding).
	api.AssertIsDifferent(c.ModelVersion, 0)
	idx := api.ToBinary(c.RegistryIndex, receipts.RegistryDepth)
	cur := c.ModelVersion
	for d := range receipts.RegistryDepth {
		left := api.Select(idx[d], c.RegistryPath[d], cur)
		right := api.Select(idx[d], cur, c.RegistryPath[d])
		cur = perm.Compress(left, right)
	}
	api.AssertIsEqual(cur, c.RegistryRoot)

	// Worker identity and signature.
	curve, err := twistededwards.NewEdCurve(api, tedwards.BN254)
	if err != nil {
		return err
	}
	curve.AssertIsOnCurve(c.PublicKey.A)
	// A small-order key would verify any signature after cofactor clearing.
	cleared := curve.Double(curve.Double(curve.Double(c.PublicKey.A)))
	api.AssertIsDifferent(cleared.X, 0)
	api.AssertIsEqual(hashElements(c.PublicKey.A.X, c.PublicKey.A.Y), c.WorkerID)

	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	two128 := new(big.Int).Lsh(big.NewInt(1), 128)
	totals := api.Add(api.Mul(c.LeafCount, two128), api.Mul(c.TotalPromptTokens, two64), c.TotalCompletionTokens)
	msg := hashElements(receipts.TagBatch, c.Root, c.ModelVersion, totals, c.Sequence)
	h, err := p2hash.New(api)
	if err != nil {
		return err
	}
	return eddsa.Verify(curve, c.Signature, msg, c.PublicKey, h)
}
