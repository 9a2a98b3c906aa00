package receipts

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	bn254 "github.com/consensys/gnark-crypto/ecc/bn254"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"golang.org/x/crypto/sha3"
)

// VerifyBatchFunction is the Solidity signature of verifyBatch on the
// TollgateBatchVerifier contract that zk.ExportBatchVerifier writes for a v2
// verifying key: the batch's public values as one tuple, then the proof.
const VerifyBatchFunction = "verifyBatch((uint256,uint256,uint256,uint256,uint64,uint64,uint64,uint64,uint64),bytes)"

// SolidityProofBytes is the length of a Groth16 proof as the Solidity
// verifier takes it: A (x, y), B (x1, x0, y1, y0), C (x, y), 32 bytes each.
const SolidityProofBytes = 8 * 32

// CalldataBytes is the length of the calldata Calldata returns (as bytes,
// before hex): the selector, nine words of public values, the proof's
// offset and length, and the proof.
const CalldataBytes = 4 + 9*32 + 2*32 + SolidityProofBytes

// ErrCalldata is returned by Verify when a batch states calldata that is not
// the calldata of its public values and proof.
var ErrCalldata = errors.New("calldata does not match the batch")

var verifyBatchSelector = func() [4]byte {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(VerifyBatchFunction))
	var s [4]byte
	copy(s[:], h.Sum(nil))
	return s
}()

// Calldata returns the transaction data that verifies b on chain: the
// ABI-encoded call verifyBatch(public, proof) to TollgateBatchVerifier,
// as 0x-prefixed lowercase hex (CalldataBytes bytes). public is b.Public
// in the contract's order (root, model_version, registry_root, worker_id
// as uint256; leaf_count, total_prompt_tokens, total_completion_tokens,
// sequence and the batch time in Unix nanoseconds as uint64); the proof is
// gnark's proof re-encoded for Solidity (MarshalSolidity: uncompressed
// points, G2 coordinates imaginary part first). Only v2 batches have
// calldata: the contract recomputes PublicDigestV2, the v2 circuit's one
// public input. Calldata checks encodings (canonical field elements, a
// batch time, a decodable proof) but does not verify the proof.
func Calldata(b *BatchProof) (string, error) {
	if b == nil {
		return "", fmt.Errorf("%w: no batch", ErrMalformedBatch)
	}
	if b.Circuit != CircuitV2 {
		return "", fmt.Errorf("%w: calldata is for circuit %s batches, this one is %q", ErrMalformedBatch, CircuitV2, b.Circuit)
	}
	pre, err := PublicPreimageV2(&b.Public)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMalformedBatch, err)
	}
	proof, err := SolidityProof(b.Proof)
	if err != nil {
		return "", err
	}
	out := make([]byte, 0, CalldataBytes)
	out = append(out, verifyBatchSelector[:]...)
	out = append(out, pre[:4*32]...) // four field elements, already 32-byte words
	for i := 4 * 32; i < len(pre); i += 8 {
		out = append(out, make([]byte, 24)...)
		out = append(out, pre[i:i+8]...)
	}
	out = appendWord(out, 10*32) // offset of the proof bytes: after the tuple's nine words and this one
	out = appendWord(out, SolidityProofBytes)
	out = append(out, proof...)
	return "0x" + hex.EncodeToString(out), nil
}

// SolidityProof decodes a base64 gnark Groth16 proof (as in a receipt) and
// returns it as the Solidity verifier takes it (SolidityProofBytes bytes).
func SolidityProof(proof64 string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil {
		return nil, fmt.Errorf("%w: proof encoding: %w", ErrProof, err)
	}
	// Decoded as groth16.Proof.ReadFrom does, less the subgroup checks
	// (most of its cost): this only re-encodes, and the verifier, on or off
	// chain, checks the points.
	var p groth16bn254.Proof
	dec := bn254.NewDecoder(bytes.NewReader(raw), bn254.NoSubgroupChecks())
	for _, v := range []any{&p.Ar, &p.Bs, &p.Krs, &p.Commitments, &p.CommitmentPok} {
		if err := dec.Decode(v); err != nil {
			return nil, fmt.Errorf("%w: proof encoding: %w", ErrProof, err)
		}
	}
	if dec.BytesRead() != int64(len(raw)) || len(p.Commitments) > 0 {
		return nil, fmt.Errorf("%w: want a BN254 proof without commitments", ErrProof)
	}
	return p.MarshalSolidity(), nil
}

func appendWord(b []byte, v uint64) []byte {
	b = append(b, make([]byte, 24)...)
	return binary.BigEndian.AppendUint64(b, v)
}

// checkCalldata compares a batch's stated calldata with the recomputed one.
func checkCalldata(b *BatchProof) error {
	want, err := Calldata(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCalldata, err)
	}
	if b.Calldata != want {
		return ErrCalldata
	}
	return nil
}
