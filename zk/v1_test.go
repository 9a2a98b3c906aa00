package zk

// The version 1 batch circuit, kept only for the dishonest-prover tests
// (attack_test.go): a verbatim copy of zk/circuit.go's Define as of the v2
// contract commit (4f124a4), renamed. Nothing outside tests can build it;
// v1 receipts are verified from their keys alone (receipts.VerifyProof).

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

type batchCircuitV1 struct {
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
func newCircuitV1(capacity int) (*batchCircuitV1, error) {
	if capacity < 2 || capacity&(capacity-1) != 0 {
		return nil, fmt.Errorf("capacity %d is not a power of two >= 2", capacity)
	}
	return &batchCircuitV1{
		Active:             make([]frontend.Variable, capacity),
		RequestCommitments: make([]frontend.Variable, capacity),
		PromptTokens:       make([]frontend.Variable, capacity),
		CompletionTokens:   make([]frontend.Variable, capacity),
	}, nil
}

// Define declares the constraints.
func (c *batchCircuitV1) Define(api frontend.API) error {
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
