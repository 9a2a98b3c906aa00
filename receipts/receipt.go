package receipts

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	// StatusVoid is a receipt ID handed to a client for a request that
	// served nothing billable (its stream failed before any token was
	// recorded); Error says why. A void receipt has no leaf and is never
	// proven.
	StatusVoid = "void"
)

// Receipt is the self-describing receipt JSON (version 1): the leaf's
// fields, and once proven the batch it belongs to with its Merkle path,
// public inputs, proof and verifying key ID.
type Receipt struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	Status  string `json:"status"`
	Error   string `json:"error,omitempty"` // why proving failed (status failed), or why nothing was billed (status void)
	// Audit is the outcome of a spot re-execution of the request on a
	// worker of another provider: "passed", "failed" (the worker was
	// disputed), "inconclusive"; empty when it was not audited. Not
	// covered by the proof: it is the gateway's statement.
	Audit string `json:"audit,omitempty"`
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
	// FinishReason is how the generation ended: "stop" or "length", or
	// "cancelled" or "error" when it ended early and the tokens are those
	// generated until then. Informational: not part of the leaf.
	FinishReason string `json:"finish_reason,omitempty"`
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
	// Calldata is the on-chain verification call for this batch (v2 only;
	// see Calldata), as a convenience: Verify checks it when present.
	Calldata string `json:"calldata,omitempty"`
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
	ErrReceiptTime    = errors.New("receipt time is after its batch time")
	ErrDevKey         = errors.New("verifying key is from a single-party development set-up")
)

// LeafFields recomputes the request commitment, model version commitment
// and leaf from the receipt's fields, validating each (CheckLeafFields).
func (r *Receipt) LeafFields() (commitment, modelVersion, leaf fr.Element, err error) {
	in, err := r.leafInputs()
	if err != nil {
		return commitment, modelVersion, leaf, err
	}
	commitment, err = RequestCommitment(in.req)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: %w", ErrLeafField, err)
	}
	leaf, err = Leaf(commitment, r.PromptTokens, r.CompletionTokens)
	if err != nil {
		return commitment, modelVersion, leaf, fmt.Errorf("%w: %w", ErrLeafField, err)
	}
	return commitment, ModelVersionCommitment(r.Model, in.model), leaf, nil
}

// CheckLeafFields reports whether LeafFields would succeed, without its
// hashing (three Poseidon2 hashes, ~100 µs): what a ledger checks of every
// record on the hot path, leaving the hashes to the prover. The hashes
// fail on nothing but what is checked here.
func (r *Receipt) CheckLeafFields() error {
	_, err := r.leafInputs()
	return err
}

// leafInputs are a receipt's leaf fields, parsed and range-checked.
type leafInputs struct {
	req   RequestFields
	model [32]byte
}

func (r *Receipt) leafInputs() (leafInputs, error) {
	rq, err := ParseDigest(r.RequestDigest)
	if err != nil {
		return leafInputs{}, fmt.Errorf("%w: request_digest: %w", ErrLeafField, err)
	}
	rs, err := ParseDigest(r.ResponseDigest)
	if err != nil {
		return leafInputs{}, fmt.Errorf("%w: response_digest: %w", ErrLeafField, err)
	}
	md, err := ParseDigest(r.ModelDigest)
	if err != nil {
		return leafInputs{}, fmt.Errorf("%w: model_digest: %w", ErrLeafField, err)
	}
	if r.RequestID == "" || r.Model == "" {
		return leafInputs{}, fmt.Errorf("%w: request_id and model are required", ErrLeafField)
	}
	if _, err := UnixNanos(r.Time); err != nil {
		return leafInputs{}, fmt.Errorf("%w: request time %s: %w", ErrLeafField, r.Time, err)
	}
	if _, err := PackTokens(r.PromptTokens, r.CompletionTokens); err != nil {
		return leafInputs{}, fmt.Errorf("%w: %w", ErrLeafField, err)
	}
	return leafInputs{req: RequestFields{RequestID: r.RequestID, RequestDigest: rq, ResponseDigest: rs, Subject: r.Subject, Time: r.Time}, model: md}, nil
}

// Verify checks a proven receipt on its own: it checks the field encodings
// (CheckEncoding), recomputes the leaf from its fields, follows the Merkle
// path to the batch root, checks the model version and worker against the
// batch's public inputs, for v2 that the receipt is not later than its
// batch, checks the registry root against the trusted one, and verifies
// the Groth16 proof with vk. The error wraps one of the Err* values above
// (or ErrEncoding, ErrBatchTime).
//
// Verify trusts its caller for vk and registryRoot: Trust.Verify is the
// verifier that picks them from pins (a pinned key set, the root in force
// at the batch's time per a verified operator history).
func Verify(r *Receipt, vk *VerifyingKey, registryRoot fr.Element) error {
	if r.Version != Version {
		return fmt.Errorf("%w: %d", ErrVersion, r.Version)
	}
	if r.Status != StatusProven || r.Batch == nil {
		return fmt.Errorf("%w: status %q", ErrNotProven, r.Status)
	}
	if err := r.CheckEncoding(); err != nil {
		return err
	}
	_, mv, leaf, err := r.LeafFields()
	if err != nil {
		return err
	}
	// A proven receipt states both, exactly as recomputed: one rendering
	// per receipt, so a reader that keys on the stated leaf (deduplicating
	// a billing run) cannot be handed the same leaf once stated and once "".
	if r.Leaf != ElementHex(leaf) {
		return fmt.Errorf("%w: stated %q, recomputed %s", ErrLeafMismatch, r.Leaf, ElementHex(leaf))
	}
	if r.ModelVersion != ElementHex(mv) {
		return fmt.Errorf("%w: stated model_version %q, recomputed %s", ErrModelVersion, r.ModelVersion, ElementHex(mv))
	}
	b := r.Batch
	if b.Circuit == CircuitV2 {
		if b.Public.Time == nil {
			return ErrBatchTime
		}
		if r.Time.After(*b.Public.Time) {
			return fmt.Errorf("%w: receipt %s, batch %s", ErrReceiptTime, r.Time.Format(time.RFC3339Nano), b.Public.Time.Format(time.RFC3339Nano))
		}
	}
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
	// The stated calldata is a convenience copy of the batch: checked (cheap)
	// before the pairing.
	if b.Calldata != "" {
		if err := checkCalldata(b); err != nil {
			return err
		}
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
	if err := checkCommitmentCount(raw); err != nil {
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

// ReadProof decodes a Groth16 proof (BN254) from bytes of unknown origin:
// it refuses a commitment count they cannot hold (see
// checkCommitmentCount) and bytes after the proof.
func ReadProof(raw []byte) (groth16.Proof, error) {
	if err := checkCommitmentCount(raw); err != nil {
		return nil, err
	}
	proof := groth16.NewProof(ecc.BN254)
	n, err := proof.ReadFrom(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if n != int64(len(raw)) {
		return nil, fmt.Errorf("%d bytes after the proof", int64(len(raw))-n)
	}
	return proof, nil
}

// checkCommitmentCount refuses a proof whose commitment count (the u32
// after Ar, Bs and Krs, each compressed or not) is more than its remaining
// bytes hold at 32 a point: gnark allocates the count's points before it
// reads them, so 2^32-1 would take 256 GiB and end the process.
func checkCommitmentCount(raw []byte) error {
	off := 0
	for _, size := range [][2]int{{32, 64}, {64, 128}, {32, 64}} { // G1, G2, G1: compressed, uncompressed
		if off >= len(raw) {
			return io.ErrUnexpectedEOF
		}
		if raw[off]>>6 == 0 { // the top two bits are 0 only uncompressed
			off += size[1]
		} else {
			off += size[0]
		}
	}
	if off+4 > len(raw) {
		return io.ErrUnexpectedEOF
	}
	if n := binary.BigEndian.Uint32(raw[off:]); uint64(n) > uint64(len(raw)-off-4)/32 {
		return fmt.Errorf("%d commitments in a proof of %d bytes", n, len(raw))
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

// IsDevKey reports whether a key header does not name an MPC ceremony:
// keys from a single-party set-up ("dev"), or with no ceremony recorded,
// can be forged with by whoever ran the set-up.
func IsDevKey(h KeyHeader) bool { return h.Ceremony != "mpc" }

// Trust is what an offline verifier pins, and Verify the verifier that
// judges a receipt by them alone:
//
//   - Keys: the verifying keys it accepts, by ID (pinned by file or by
//     hash). A receipt naming any other key is refused.
//   - Roots: the operator's verified registry root history (v2). The
//     batch's registry root must be the root in force at its batch time,
//     so a key the operator never admitted, or a pair it revoked before
//     the batch, cannot produce a receipt that verifies; and a key the
//     history revokes from some time (RevokedKey) verifies nothing dated
//     from then on.
//   - V1Roots: model registry roots trusted for v1 receipts (the v1
//     registry holds model versions only; v1 proofs are unaudited).
//   - AllowDevKeys: accept keys whose header does not name an MPC
//     ceremony (IsDevKey). Off by default.
type Trust struct {
	Keys         map[string]*VerifyingKey
	Roots        *Roots
	V1Roots      []fr.Element
	AllowDevKeys bool
}

// Verify checks r with the pinned key and root (see Trust and Verify).
func (t *Trust) Verify(r *Receipt) error {
	if r.Batch == nil {
		return Verify(r, nil, fr.Element{}) // reports not proven / version
	}
	b := r.Batch
	vk := t.Keys[b.VerifyingKeyID]
	if vk == nil {
		return fmt.Errorf("%w: key %s is not pinned", ErrVerifyingKey, b.VerifyingKeyID)
	}
	if IsDevKey(vk.Header) && !t.AllowDevKeys {
		return fmt.Errorf("%w: %s (ceremony %q); allow development keys explicitly to accept it", ErrDevKey, vk.ID, vk.Header.Ceremony)
	}
	if vk.Header.Circuit != b.Circuit {
		return fmt.Errorf("%w: receipt is for %s, key %s for %s", ErrVerifyingKey, b.Circuit, vk.ID, vk.Header.Circuit)
	}
	var root fr.Element
	switch b.Circuit {
	case CircuitV2:
		if b.Public.Time == nil {
			return ErrBatchTime
		}
		if t.Roots == nil {
			return fmt.Errorf("%w: no operator root history pinned", ErrRegistryRoot)
		}
		var err error
		if root, _, err = t.Roots.RootAt(*b.Public.Time); err != nil {
			return fmt.Errorf("%w: %w", ErrRegistryRoot, err)
		}
		if from, revoked := t.Roots.KeyRevoked(b.Public.WorkerID, *b.Public.Time); revoked {
			return fmt.Errorf("%w: worker %s from %s, batch time %s", ErrKeyRevoked, b.Public.WorkerID,
				from.Format(time.RFC3339Nano), b.Public.Time.Format(time.RFC3339Nano))
		}
	case CircuitV1:
		claimed, err := ParseCanonicalElement(b.Public.RegistryRoot)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformedBatch, err)
		}
		found := false
		for _, tr := range t.V1Roots {
			found = found || tr.Equal(&claimed)
		}
		if !found {
			return fmt.Errorf("%w: v1 registry root %s is not trusted", ErrRegistryRoot, b.Public.RegistryRoot)
		}
		root = claimed
	default:
		return fmt.Errorf("%w: unknown circuit %q", ErrMalformedBatch, b.Circuit)
	}
	return Verify(r, vk, root)
}

// VerifyJSON parses a receipt strictly (ParseReceipt) and verifies it.
func (t *Trust) VerifyJSON(raw []byte) (*Receipt, error) {
	r, err := ParseReceipt(raw)
	if err != nil {
		return nil, err
	}
	return r, t.Verify(r)
}
