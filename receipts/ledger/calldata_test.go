package ledger

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"

	"github.com/tollgate-ai/tollgate/receipts"
)

type oneInput struct {
	X frontend.Variable `gnark:",public"`
	Y frontend.Variable
}

func (c *oneInput) Define(api frontend.API) error {
	api.AssertIsEqual(c.X, c.Y)
	return nil
}

// TestRenderCalldata: a proven v2 receipt carries its batch's on-chain
// calldata; a v1 one carries none (TollgateBatchVerifier is v2 only).
func TestRenderCalldata(t *testing.T) {
	cs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, &oneInput{})
	if err != nil {
		t.Fatal(err)
	}
	pk, _, err := groth16.Setup(cs)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := frontend.NewWitness(&oneInput{X: 1, Y: 1}, ecc.BN254.ScalarField())
	p, err := groth16.Prove(cs, pk, w)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p.WriteTo(&buf)
	ts := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	e := &Entry{Seq: 1, ID: "rcpt_0", Completion: completion(0), BatchSeq: 1, Index: 0}
	for _, circuit := range []string{receipts.CircuitV2, receipts.CircuitV1} {
		b := &Batch{Seq: 1, Capacity: 2, Status: receipts.StatusProven, Leaves: []string{elementHex(1), elementHex(2)}, Circuit: circuit,
			Public: &receipts.BatchPublic{Root: elementHex(3), ModelVersion: elementHex(4), RegistryRoot: elementHex(5), WorkerID: elementHex(6), LeafCount: 2, Time: &ts},
			Proof:  base64.StdEncoding.EncodeToString(buf.Bytes()), VKID: "vk"}
		r, err := render(e, b, treeCache{})
		if err != nil {
			t.Fatal(err)
		}
		bare := *r.Batch
		bare.Calldata = ""
		want, _ := receipts.Calldata(&bare) // "" for v1
		if r.Batch.Calldata != want || (circuit == receipts.CircuitV2) != (want != "") {
			t.Errorf("%s: calldata %.20q, want %.20q", circuit, r.Batch.Calldata, want)
		}
	}
}

// elementHex is v as a canonical field element string.
func elementHex(v uint64) string {
	var e fr.Element
	e.SetUint64(v)
	return receipts.ElementHex(e)
}
