package receipts

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/backend/witness"
)

// Version is the receipt JSON format version.
const Version = 1

// Receipt statuses.
const (
	StatusPending = "pending"
	StatusProven  = "proven"
	StatusFailed  = "failed"
)

// Receipt is the self-describing receipt JSON (version 1): the leaf's
// fields, and once proven the batch it belongs to with its Merkle path,
// public inputs, proof and verifying key ID.
type Receipt struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	Status  string `json:"status"`
	Error   string `json:"error,omitempty"` // why proving failed (status failed)
	// PendingReason says why a pending receipt is waiting (its worker has
	// not countersigned its batch yet, or the batch was re-cut); empty
	// while it simply waits its turn.
	PendingReason string `json:"pending_reason,omitempty"`
	// Cursor is the receipt's position in the gateway's export order: pass
	// it as ?after= to list the receipts recorded after it.
	Cursor string `json:"cursor,omitempty"`

	// Leaf fields.
	RequestID        string    `json:"request_id"`
	RequestDigest    string    `json:"request_digest"`
	ResponseDigest   string    `json:"response_digest"`
	Subject          string    `json:"subject,omitempty"`
	Time             time.Time `json:"time"`
	Model            string    `json:"model"`
	ModelDigest      string    `json:"model_digest"`
	WorkerID         string    `json:"worker_id"`
	PromptTokens     uint64    `json:"prompt_tokens"`
	CompletionTokens uint64    `json:"completion_tokens"`
	// Derived, for readers; Verify recomputes them.
	ModelVersion string `json:"model_version"` // ModelVersionCommitment
	Leaf         string `json:"leaf"`

	Batch *BatchProof `json:"batch,omitempty"`
}

// BatchProof is the proven batch a receipt belongs to.
type BatchProof struct {
	Circuit        string      `json:"circuit"`
	Capacity       int         `json:"capacity"`
	Index          uint64      `json:"index"`
	Path           []string    `json:"path"` // siblings from the leaf up
	Public         BatchPublic `json:"public"`
	Signature      string      `json:"signature"` // worker's EdDSA signature, base64
	Proof          string      `json:"proof"`     // gnark Groth16 proof, base64
	VerifyingKeyID string      `json:"vk_id"`
	ProvenAt       time.Time   `json:"proven_at"`
}

// Verification failures. Verify wraps one of these with details.
var (
	ErrVersion        = errors.New("unsupported receipt version")
	ErrNotProven      = errors.New("receipt is not proven")
	ErrLeafField      = errors.New("invalid leaf field")
	ErrLeafMismatch   = errors.New("leaf does not match its fields")
	ErrModelVersion   = errors.New("model version does not match the batch")
	ErrWorker         = errors.New("worker ID does not match the batch")
	ErrPath           = errors.New("Merkle path does not lead to the batch root")
	ErrRegistryRoot   = errors.New("registry root does not match")
	ErrVerifyingKey   = errors.New("verifying key does not match the receipt")
	ErrProof          = errors.New("proof does not verify")
	ErrMalformedBatch = errors.New("malformed batch")
	ErrTokensMissing  = errors.New("batch totals cannot cover the receipt's tokens")
)

// LeafFields recomputes the request commitment, model version commitment
// and leaf from the receipt's fields, validating each.
func (r *Receipt) LeafFields() (commitment, modelVersion, leaf fr.Element, err error) {
	rq, err := ParseDigest(r.RequestDigest)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: request_digest: %w", ErrLeafField, err)
	}
	rs, err := ParseDigest(r.ResponseDigest)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: response_digest: %w", ErrLeafField, err)
	}
	md, err := ParseDigest(r.ModelDigest)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: model_digest: %w", ErrLeafField, err)
	}
	if r.RequestID == "" || r.Model == "" {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: request_id and model are required", ErrLeafField)
	}
	commitment, err = RequestCommitment(RequestFields{RequestID: r.RequestID, RequestDigest: rq, ResponseDigest: rs, Subject: r.Subject, Time: r.Time})
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: %w", ErrLeafField, err)
	}
	leaf, err = Leaf(commitment, r.PromptTokens, r.CompletionTokens)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: %w", ErrLeafField, err)
	}
	return commitment, ModelVersionCommitment(r.Model, md), leaf, nil
}

// Verify checks a proven receipt on its own: it recomputes the leaf from
// its fields, follows the Merkle path to the batch root, checks the model
// version and worker against the batch's public inputs, checks the registry
// root against the trusted one, and verifies the Groth16 proof with vk. The
// error wraps one of the Err* values above.
func Verify(r *Receipt, vk *VerifyingKey, registryRoot fr.Element) error {
	if r.Version != Version {
		return fmt.Errorf("%w: %d", ErrVersion, r.Version)
	}
	if r.Status != StatusProven || r.Batch == nil {
		return fmt.Errorf("%w: status %q", ErrNotProven, r.Status)
	}
	_, mv, leaf, err := r.LeafFields()
	if err != nil {
		return err
	}
	if r.Leaf != "" && r.Leaf != ElementHex(leaf) {
		return fmt.Errorf("%w: stated %s, recomputed %s", ErrLeafMismatch, r.Leaf, ElementHex(leaf))
	}
	b := r.Batch
	pub, err := b.Public.Elements()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	if !pub[1].Equal(&mv) {
		return fmt.Errorf("%w: receipt %s (%s), batch %s", ErrModelVersion, ElementHex(mv), r.Model, b.Public.ModelVersion)
	}
	if r.WorkerID != b.Public.WorkerID {
		return fmt.Errorf("%w: receipt %s, batch %s", ErrWorker, r.WorkerID, b.Public.WorkerID)
	}
	if b.Capacity < 2 || b.Capacity&(b.Capacity-1) != 0 || len(b.Path) != bits.TrailingZeros(uint(b.Capacity)) {
		return fmt.Errorf("%w: capacity %d with a path of %d siblings", ErrMalformedBatch, b.Capacity, len(b.Path))
	}
	if b.Index >= b.Public.LeafCount || b.Public.LeafCount > uint64(b.Capacity) {
		return fmt.Errorf("%w: index %d outside the batch's %d leaves", ErrPath, b.Index, b.Public.LeafCount)
	}
	if r.PromptTokens > b.Public.TotalPromptTokens || r.CompletionTokens > b.Public.TotalCompletionTokens {
		return ErrTokensMissing
	}
	path := make([]fr.Element, len(b.Path))
	for i, s := range b.Path {
		if path[i], err = ParseElement(s); err != nil {
			return fmt.Errorf("%w: sibling %d: %w", ErrPath, i, err)
		}
	}
	if got := RootFromPath(leaf, b.Index, path); !got.Equal(&pub[0]) {
		return fmt.Errorf("%w: got %s, batch root %s", ErrPath, ElementHex(got), b.Public.Root)
	}
	if !pub[2].Equal(&registryRoot) {
		return fmt.Errorf("%w: batch %s, trusted %s", ErrRegistryRoot, b.Public.RegistryRoot, ElementHex(registryRoot))
	}
	if vk == nil {
		return fmt.Errorf("%w: none given", ErrVerifyingKey)
	}
	if vk.ID != b.VerifyingKeyID || vk.Header.Capacity != b.Capacity || vk.Header.Circuit != b.Circuit {
		return fmt.Errorf("%w: receipt names %s (capacity %d), key is %s (capacity %d)", ErrVerifyingKey, b.VerifyingKeyID, b.Capacity, vk.ID, vk.Header.Capacity)
	}
	return VerifyProof(vk, &b.Public, b.Proof)
}

// VerifyProof checks a base64 Groth16 proof against public values, building
// the public witness the verifying key's circuit expects (PublicInputs).
func VerifyProof(vk *VerifyingKey, public *BatchPublic, proof64 string) error {
	pub, err := PublicInputs(vk.Header.Circuit, public)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	raw, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil {
		return fmt.Errorf("%w: proof encoding: %w", ErrProof, err)
	}
	proof := groth16.NewProof(ecc.BN254)
	if _, err := proof.ReadFrom(bytes.NewReader(raw)); err != nil {
		return fmt.Errorf("%w: proof encoding: %w", ErrProof, err)
	}
	w, err := PublicWitness(pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProof, err)
	}
	if err := groth16.Verify(proof, vk.Key, w); err != nil {
		return fmt.Errorf("%w: %w", ErrProof, err)
	}
	return nil
}

// PublicWitness wraps public inputs (in circuit order) as a gnark witness.
func PublicWitness(pub []fr.Element) (witness.Witness, error) {
	w, err := witness.New(ecc.BN254.ScalarField())
	if err != nil {
		return nil, err
	}
	ch := make(chan any, len(pub))
	for _, e := range pub {
		ch <- e
	}
	close(ch)
	if err := w.Fill(len(pub), 0, ch); err != nil {
		return nil, err
	}
	return w, nil
}
