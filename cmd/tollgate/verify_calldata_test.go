package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
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

// anyProof is a real BN254 Groth16 proof (of a one-line circuit): printing
// calldata only re-encodes it.
func anyProof(t *testing.T) string {
	t.Helper()
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
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestPrintCalldata(t *testing.T) {
	ts := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	v2 := &receipts.BatchProof{Circuit: receipts.CircuitV2, Capacity: 8, Proof: anyProof(t),
		Public: receipts.BatchPublic{Root: elementHex(1), ModelVersion: elementHex(2), RegistryRoot: elementHex(3), WorkerID: elementHex(4), LeafCount: 1, Time: &ts}}
	want, err := receipts.Calldata(v2)
	if err != nil {
		t.Fatal(err)
	}
	v1 := *v2
	v1.Circuit = receipts.CircuitV1
	tests := []struct {
		name  string
		batch *receipts.BatchProof
		want  string
	}{
		{"v2 batch", v2, "rcpt_1\tcalldata\t" + want + "\n"},
		{"v1 batch", &v1, "rcpt_1\tcalldata\tnone: "},
		{"pending", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, _ := json.Marshal(&receipts.Receipt{ID: "rcpt_1", Batch: tt.batch})
			var out bytes.Buffer
			printCalldata(&out, raw)
			if !strings.HasPrefix(out.String(), tt.want) || (tt.want == "" && out.Len() > 0) {
				t.Errorf("printed %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// elementHex is v as a canonical field element string.
func elementHex(v uint64) string {
	var e fr.Element
	e.SetUint64(v)
	return receipts.ElementHex(e)
}
