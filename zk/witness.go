package zk

import (
	"errors"
	"fmt"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"
	tedwards "github.com/consensys/gnark-crypto/ecc/twistededwards"
	"github.com/consensys/gnark/frontend"

	"github.com/tollgate-ai/tollgate/receipts"
)

// LeafInput is one receipt's secret leaf data.
type LeafInput struct {
	RequestCommitment fr.Element
	PromptTokens      uint64
	CompletionTokens  uint64
}

// Batch is everything needed to assign a BatchCircuit: the leaves in slot
// order, the model version, the worker's admission to the registry, the
// worker's key and its signature over receipts.BatchMessageV2 (Message).
type Batch struct {
	Capacity     int
	Leaves       []LeafInput
	ModelVersion fr.Element
	RegistryRoot fr.Element // admission registry root (receipts.AdmissionRegistry)
	// RegistryIndex and RegistryPath (receipts.RegistryDepthV2 siblings,
	// bottom up) place receipts.AdmissionLeaf(worker ID, ModelVersion) in
	// the admission registry.
	RegistryIndex uint64
	RegistryPath  []fr.Element
	PublicKey     *eddsa.PublicKey
	Signature     []byte // gnark-crypto eddsa encoding (64 bytes)
	Sequence      uint64
	Time          time.Time // when the batch was cut; signed and public
}

// Root is the batch Merkle root over the padded leaves.
func (b *Batch) Root() (fr.Element, error) {
	leaves, err := b.leafHashes()
	if err != nil {
		return fr.Element{}, err
	}
	return receipts.MerkleRoot(leaves), nil
}

func (b *Batch) leafHashes() ([]fr.Element, error) {
	if len(b.Leaves) == 0 || len(b.Leaves) > b.Capacity {
		return nil, fmt.Errorf("batch of %d leaves does not fit capacity %d", len(b.Leaves), b.Capacity)
	}
	out := make([]fr.Element, b.Capacity)
	for i, l := range b.Leaves {
		h, err := receipts.Leaf(l.RequestCommitment, l.PromptTokens, l.CompletionTokens)
		if err != nil {
			return nil, fmt.Errorf("leaf %d: %w", i, err)
		}
		out[i] = h
	}
	return out, nil
}

// Public returns the batch's public inputs.
func (b *Batch) Public() (receipts.BatchPublic, error) {
	root, err := b.Root()
	if err != nil {
		return receipts.BatchPublic{}, err
	}
	if b.PublicKey == nil {
		return receipts.BatchPublic{}, errors.New("batch has no worker public key")
	}
	if b.Time.IsZero() || b.Time.UnixNano() < 0 {
		return receipts.BatchPublic{}, receipts.ErrBatchTime
	}
	tp, tc := b.totals()
	return receipts.BatchPublic{
		Root:                  receipts.ElementHex(root),
		ModelVersion:          receipts.ElementHex(b.ModelVersion),
		RegistryRoot:          receipts.ElementHex(b.RegistryRoot),
		WorkerID:              receipts.WorkerID(b.PublicKey),
		LeafCount:             uint64(len(b.Leaves)),
		TotalPromptTokens:     tp,
		TotalCompletionTokens: tc,
		Sequence:              b.Sequence,
		Time:                  receipts.BatchTime(b.Time),
	}, nil
}

func (b *Batch) totals() (prompt, completion uint64) {
	for _, l := range b.Leaves {
		prompt += l.PromptTokens
		completion += l.CompletionTokens
	}
	return prompt, completion
}

// Message is what the worker signs for b: receipts.BatchMessageV2 over its
// root, model version, totals, sequence and time.
func (b *Batch) Message() (fr.Element, error) {
	root, err := b.Root()
	if err != nil {
		return fr.Element{}, err
	}
	if b.Time.IsZero() || b.Time.UnixNano() < 0 {
		return fr.Element{}, receipts.ErrBatchTime
	}
	tp, tc := b.totals()
	return receipts.BatchMessageV2(root, b.ModelVersion, uint64(len(b.Leaves)), tp, tc, b.Sequence, uint64(b.Time.UnixNano())), nil
}

// Assign builds the full witness assignment for b.
func Assign(b *Batch) (*BatchCircuit, error) {
	c, err := NewCircuit(b.Capacity)
	if err != nil {
		return nil, err
	}
	pub, err := b.Public()
	if err != nil {
		return nil, err
	}
	if len(b.RegistryPath) != receipts.RegistryDepthV2 {
		return nil, fmt.Errorf("registry path has %d siblings, want %d", len(b.RegistryPath), receipts.RegistryDepthV2)
	}
	var sig eddsa.Signature
	if _, err := sig.SetBytes(b.Signature); err != nil { // gnark's Assign would panic on a bad encoding
		return nil, fmt.Errorf("worker signature: %w", err)
	}
	digest, err := receipts.PublicDigestV2(&pub)
	if err != nil {
		return nil, err
	}
	els, err := pub.Elements()
	if err != nil {
		return nil, err
	}
	c.PublicDigest = digest
	c.Root, c.ModelVersion, c.RegistryRoot = els[0], els[1], els[2]
	c.LeafCount, c.TotalPromptTokens, c.TotalCompletionTokens, c.Sequence = els[4], els[5], els[6], els[7]
	c.BatchTime = uint64(b.Time.UnixNano())
	for i := range b.Capacity {
		c.Active[i], c.RequestCommitments[i], c.PromptTokens[i], c.CompletionTokens[i] = 0, 0, 0, 0
		if i < len(b.Leaves) {
			l := b.Leaves[i]
			c.Active[i], c.RequestCommitments[i], c.PromptTokens[i], c.CompletionTokens[i] = 1, l.RequestCommitment, l.PromptTokens, l.CompletionTokens
		}
	}
	c.RegistryIndex = b.RegistryIndex
	for i, s := range b.RegistryPath {
		c.RegistryPath[i] = s
	}
	c.PublicKey.Assign(tedwards.BN254, b.PublicKey.Bytes())
	c.Signature.Assign(tedwards.BN254, b.Signature)
	return c, nil
}

var _ frontend.Circuit = (*BatchCircuit)(nil)
