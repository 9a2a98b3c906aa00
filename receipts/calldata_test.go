package receipts

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
)

// squareCircuit is a stand-in with one public input, enough to get a real
// BN254 Groth16 proof and key for encoding tests (the batch circuit lives in
// package zk, which imports this one).
type squareCircuit struct {
	X frontend.Variable `gnark:",public"`
	Y frontend.Variable
}

func (c *squareCircuit) Define(api frontend.API) error {
	api.AssertIsEqual(api.Mul(c.Y, c.Y), c.X)
	return nil
}

// squareProof proves 9 = 3² and returns the base64 proof (as a receipt
// carries it), the proof itself and its verifying key.
func squareProof(t *testing.T) (string, *groth16bn254.Proof, groth16.VerifyingKey) {
	t.Helper()
	cs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, &squareCircuit{})
	if err != nil {
		t.Fatal(err)
	}
	pk, vk, err := groth16.Setup(cs)
	if err != nil {
		t.Fatal(err)
	}
	w, err := frontend.NewWitness(&squareCircuit{X: 9, Y: 3}, ecc.BN254.ScalarField())
	if err != nil {
		t.Fatal(err)
	}
	p, err := groth16.Prove(cs, pk, w)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), p.(*groth16bn254.Proof), vk
}

// elHex is v as a canonical field element string.
func elHex(v uint64) string { return ElementHex(u64(v)) }

func calldataBatch(proof64 string) *BatchProof {
	ts := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return &BatchProof{
		Circuit:  CircuitV2,
		Capacity: 8,
		Public: BatchPublic{
			Root: elHex(0x0102), ModelVersion: elHex(0x0304), RegistryRoot: elHex(0x0506), WorkerID: "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000", // r-1
			LeafCount: 3, TotalPromptTokens: 1000, TotalCompletionTokens: 2000, Sequence: 42, Time: &ts,
		},
		Proof: proof64,
	}
}

func TestCalldataLayout(t *testing.T) {
	proof64, proof, _ := squareProof(t)
	b := calldataBatch(proof64)
	got, err := Calldata(b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "0x") || strings.ToLower(got) != got {
		t.Fatalf("calldata %q is not lowercase 0x hex", got[:10])
	}
	raw, err := hex.DecodeString(got[2:])
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != CalldataBytes {
		t.Fatalf("calldata is %d bytes, want %d", len(raw), CalldataBytes)
	}
	// The selector solc gives verifyBatch (test/evm checks it against the
	// compiled contract's ABI).
	if sel := hex.EncodeToString(raw[:4]); sel != verifyBatchSelectorHex {
		t.Errorf("selector %s, want %s", sel, verifyBatchSelectorHex)
	}
	word := func(i int) *big.Int { return new(big.Int).SetBytes(raw[4+32*i : 4+32*(i+1)]) }
	rMinus1 := new(big.Int).Sub(fr.Modulus(), big.NewInt(1))
	wantWords := []*big.Int{
		big.NewInt(0x0102), big.NewInt(0x0304), big.NewInt(0x0506), rMinus1,
		big.NewInt(3), big.NewInt(1000), big.NewInt(2000), big.NewInt(42), big.NewInt(b.Public.Time.UnixNano()),
		big.NewInt(10 * 32), big.NewInt(SolidityProofBytes),
	}
	for i, w := range wantWords {
		if word(i).Cmp(w) != 0 {
			t.Errorf("word %d = %v, want %v", i, word(i), w)
		}
	}
	if sol := proof.MarshalSolidity(); !bytes.Equal(raw[4+11*32:], sol) {
		t.Error("proof bytes are not gnark's MarshalSolidity encoding")
	}
	// MarshalSolidity's order, which the exported verifier reads: A.x, A.y,
	// B.x1, B.x0, B.y1, B.y0, C.x, C.y.
	p := raw[4+11*32:]
	for i, c := range [][32]byte{proof.Ar.X.Bytes(), proof.Ar.Y.Bytes(), proof.Bs.X.A1.Bytes(), proof.Bs.X.A0.Bytes(),
		proof.Bs.Y.A1.Bytes(), proof.Bs.Y.A0.Bytes(), proof.Krs.X.Bytes(), proof.Krs.Y.Bytes()} {
		if !bytes.Equal(p[32*i:32*(i+1)], c[:]) {
			t.Errorf("proof word %d is not the expected coordinate", i)
		}
	}
	// The packed values are PublicPreimageV2, whose hash is the circuit's input.
	pre, err := PublicPreimageV2(&b.Public)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pre[:128], raw[4:4+128]) || binary.BigEndian.Uint64(pre[160:]) != uint64(b.Public.Time.UnixNano()) {
		t.Error("calldata words differ from the v2 public preimage")
	}
}

func TestCalldataRefuses(t *testing.T) {
	proof64, _, _ := squareProof(t)
	tests := []struct {
		name   string
		tamper func(b *BatchProof)
		want   error
	}{
		{"v1 batch", func(b *BatchProof) { b.Circuit = CircuitV1 }, ErrMalformedBatch},
		{"no batch time", func(b *BatchProof) { b.Public.Time = nil }, ErrMalformedBatch},
		{"root not below r", func(b *BatchProof) {
			b.Public.Root = "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"
		}, ErrMalformedBatch},
		{"worker ID not hex", func(b *BatchProof) { b.Public.WorkerID = "worker" }, ErrMalformedBatch},
		{"proof not base64", func(b *BatchProof) { b.Proof = "!!" }, ErrProof},
		{"proof truncated", func(b *BatchProof) {
			raw, _ := base64.StdEncoding.DecodeString(b.Proof)
			b.Proof = base64.StdEncoding.EncodeToString(raw[:100])
		}, ErrProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := calldataBatch(proof64)
			tt.tamper(b)
			if _, err := Calldata(b); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := Calldata(nil); !errors.Is(err, ErrMalformedBatch) {
		t.Errorf("nil batch: err = %v", err)
	}
}

// TestVerifyChecksStatedCalldata: a receipt whose batch states calldata
// other than its own (say, for another batch's values, so an on-chain check
// would pass for something else) is refused; its own calldata is accepted
// and verification goes on to the proof.
func TestVerifyChecksStatedCalldata(t *testing.T) {
	proof64, _, gvk := squareProof(t)
	r := &Receipt{Version: Version, ID: "rcpt_1", Status: StatusProven, RequestID: "req_1",
		RequestDigest: hex64, ResponseDigest: hex64, Time: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		Model: "m", ModelDigest: hex64, PromptTokens: 5, CompletionTokens: 7}
	_, mv, leaf, err := r.LeafFields()
	if err != nil {
		t.Fatal(err)
	}
	r.ModelVersion, r.Leaf = ElementHex(mv), ElementHex(leaf)
	leaves := []fr.Element{leaf, {}}
	root := MerkleRoot(leaves)
	var registry fr.Element
	registry.SetUint64(77)
	r.WorkerID = elHex(5)
	ts := time.Date(2026, 3, 1, 0, 0, 1, 0, time.UTC)
	r.Batch = &BatchProof{Circuit: CircuitV2, Capacity: 2, Index: 0, Path: []string{ElementHex(leaves[1])},
		Public: BatchPublic{Root: ElementHex(root), ModelVersion: ElementHex(mv), RegistryRoot: ElementHex(registry), WorkerID: r.WorkerID,
			LeafCount: 1, TotalPromptTokens: 5, TotalCompletionTokens: 7, Sequence: 1, Time: &ts},
		Proof: proof64, VerifyingKeyID: "vk_test"}
	vk := &VerifyingKey{Header: KeyHeader{Kind: "vk", Circuit: CircuitV2, Capacity: 2}, ID: "vk_test", Key: gvk}

	other := *r.Batch
	other.Public.TotalPromptTokens = 5000
	otherCalldata, err := Calldata(&other)
	if err != nil {
		t.Fatal(err)
	}
	own, err := Calldata(r.Batch)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		calldata string
		want     error
	}{
		{"another batch's calldata", otherCalldata, ErrCalldata},
		{"uppercase hex", "0x" + strings.ToUpper(own[2:]), ErrCalldata},
		{"own calldata", own, ErrProof}, // the stand-in proof is not a batch proof
		{"none stated", "", ErrProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Batch.Calldata = tt.calldata
			if err := Verify(r, vk, registry); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// verifyBatchSelectorHex is keccak256(VerifyBatchFunction)[:4], computed
// independently (and checked against solc's ABI by test/evm).
const verifyBatchSelectorHex = "dd78d609"

// BenchmarkCalldata: the ledger computes calldata each time it renders a
// proven v2 receipt.
func BenchmarkCalldata(b *testing.B) {
	t := &testing.T{}
	proof64, _, _ := squareProof(t)
	batch := calldataBatch(proof64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Calldata(batch); err != nil {
			b.Fatal(err)
		}
	}
}
