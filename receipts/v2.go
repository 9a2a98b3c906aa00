package receipts

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// Circuit IDs. A receipt's batch names the circuit its proof is for, and
// verification builds the public witness that circuit expects.
//
//   - CircuitV1 ("tollgate-batch-v1") is the first statement: eight public
//     inputs, a registry of model versions only, and no check on the
//     signature point R (forgeable by a dishonest prover; see zk/AUDIT.md).
//     Receipts proven under it still verify with their v1 keys and are
//     labelled as such; nothing new is proven under it.
//   - CircuitV2 ("tollgate-batch-v2") is the audited statement: one public
//     input (PublicDigestV2 over the batch's public values), an admission
//     registry of (worker ID, model version) pairs, a batch time, and every
//     point and scalar constrained.
const (
	CircuitV1 = "tollgate-batch-v1"
	CircuitV2 = "tollgate-batch-v2"
)

// Domain tags added by version 2.
const (
	TagAdmission uint64 = 0x5447_4144 // "TGAD": an admission registry leaf
	TagBatchV2   uint64 = 0x5447_4232 // "TGB2": what a worker signs for a v2 batch
)

// RegistryDepthV2 is the depth of the v2 admission registry tree: up to
// 65,536 admitted (worker, model version) pairs.
const RegistryDepthV2 = 16

// AdmissionLeaf is the v2 registry leaf for one admitted pair:
// H(TagAdmission, worker ID, model version commitment). The registry root
// commits to the set of these, so a key the operator never admitted for a
// model version cannot produce a receipt that verifies.
func AdmissionLeaf(workerID, modelVersion fr.Element) fr.Element {
	return HashElements(u64(TagAdmission), workerID, modelVersion)
}

// BatchMessageV2 is what a worker signs for a v2 batch: H(TagBatchV2, root,
// model version, PackTotals(count, prompt, completion), sequence, batch
// time in Unix nanoseconds). The distinct tag keeps a v1 signature from
// being replayed as a v2 one.
func BatchMessageV2(root, modelVersion fr.Element, count, totalPrompt, totalCompletion, sequence, timeNs uint64) fr.Element {
	return HashElements(u64(TagBatchV2), root, modelVersion, PackTotals(count, totalPrompt, totalCompletion), u64(sequence), u64(timeNs))
}

// PublicBytesV2 is the 168-byte preimage of PublicDigestV2: root, model
// version, registry root and worker ID as 32-byte big-endian canonical
// field elements, then leaf count, total prompt tokens, total completion
// tokens, sequence and batch time (Unix ns) as 8-byte big-endian integers.
// The Solidity wrapper builds the same bytes with abi.encodePacked.
const PublicBytesV2 = 4*32 + 5*8

// ErrBatchTime is returned for a v2 batch without a valid time.
var ErrBatchTime = errors.New("batch time missing or outside 1970–2262")

// errTimeRange is UnixNanos's error.
var errTimeRange = errors.New("time outside 1970–2262 (Unix nanoseconds must fit an int64)")

// UnixNanos returns t in Unix nanoseconds, the encoding every hashed or
// signed time uses, refusing times before 1970 and after 2262-04-11, where
// time.Time.UnixNano is undefined (it wraps: t + 2^64 ns would encode as
// t, so a receipt could state a time its proof is not about).
func UnixNanos(t time.Time) (uint64, error) {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, 1<<63-1)) {
		return 0, errTimeRange
	}
	return uint64(t.UnixNano()), nil
}

// PublicPreimageV2 returns the PublicBytesV2 bytes of p, rejecting
// non-canonical field elements and a missing batch time.
func PublicPreimageV2(p *BatchPublic) ([]byte, error) {
	els, err := p.fieldElements()
	if err != nil {
		return nil, err
	}
	if p.Time == nil {
		return nil, ErrBatchTime
	}
	ns, err := UnixNanos(*p.Time)
	if err != nil {
		return nil, ErrBatchTime
	}
	out := make([]byte, 0, PublicBytesV2)
	for _, e := range els {
		b := e.Bytes()
		out = append(out, b[:]...)
	}
	for _, v := range []uint64{p.LeafCount, p.TotalPromptTokens, p.TotalCompletionTokens, p.Sequence, ns} {
		out = binary.BigEndian.AppendUint64(out, v)
	}
	return out, nil
}

// PublicDigestV2 is the v2 circuit's single public input: SHA-256 of
// PublicPreimageV2(p) read as a big-endian integer with its top three bits
// cleared (so it is below 2^253 < r). Folding the public values into one
// input costs the on-chain verifier one SHA-256 precompile call instead of
// one elliptic-curve multiplication per value.
func PublicDigestV2(p *BatchPublic) (fr.Element, error) {
	pre, err := PublicPreimageV2(p)
	if err != nil {
		return fr.Element{}, err
	}
	d := sha256.Sum256(pre)
	d[0] &= 0x1f
	var e fr.Element
	if err := e.SetBytesCanonical(d[:]); err != nil {
		return e, fmt.Errorf("public digest: %w", err) // cannot happen below 2^253
	}
	return e, nil
}

// PublicInputs returns the public witness a circuit expects for p, in
// circuit order: the eight values for CircuitV1, the one digest for
// CircuitV2.
func PublicInputs(circuit string, p *BatchPublic) ([]fr.Element, error) {
	switch circuit {
	case CircuitV1:
		return p.Elements()
	case CircuitV2:
		d, err := PublicDigestV2(p)
		if err != nil {
			return nil, err
		}
		return []fr.Element{d}, nil
	default:
		return nil, fmt.Errorf("unknown circuit %q", circuit)
	}
}

// BatchTime returns t in UTC as a BatchPublic.Time value.
func BatchTime(t time.Time) *time.Time {
	u := t.UTC()
	return &u
}
