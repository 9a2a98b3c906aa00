package zk

import (
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/frontend"
	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/receipts"
)

func TestProveAndVerify(t *testing.T) {
	dir := TestKeyDir()
	if err := EnsureDevKeys(dir, 8); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProver(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testBatch(t, 8, 3)
	proof, pub, err := p.Prove(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipts.VerifyProof(p.VK, &pub, proof); err != nil {
		t.Fatalf("proof does not verify: %v", err)
	}
	tests := []struct {
		name   string
		tamper func(pub *receipts.BatchPublic)
	}{
		{"total prompt", func(pub *receipts.BatchPublic) { pub.TotalPromptTokens++ }},
		{"total completion", func(pub *receipts.BatchPublic) { pub.TotalCompletionTokens-- }},
		{"leaf count", func(pub *receipts.BatchPublic) { pub.LeafCount = 2 }},
		{"sequence", func(pub *receipts.BatchPublic) { pub.Sequence++ }},
		{"root", func(pub *receipts.BatchPublic) { pub.Root = pub.ModelVersion }},
		{"model version", func(pub *receipts.BatchPublic) { pub.ModelVersion = pub.Root }},
		{"registry root", func(pub *receipts.BatchPublic) { pub.RegistryRoot = pub.Root }},
		{"worker", func(pub *receipts.BatchPublic) { pub.WorkerID = pub.Root }},
		{"time", func(pub *receipts.BatchPublic) { t := pub.Time.Add(time.Nanosecond); pub.Time = &t }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := pub
			tt.tamper(&bad)
			if err := receipts.VerifyProof(p.VK, &bad, proof); err == nil {
				t.Error("tampered public input verified")
			}
		})
	}
}

func TestPublicWitnessOrder(t *testing.T) {
	// The public vector receipts builds must be gnark's public witness for the assignment.
	b, _ := testBatch(t, 8, 2)
	a, err := Assign(b)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := b.Public()
	els, err := receipts.PublicInputs(CircuitID, &pub)
	if err != nil {
		t.Fatal(err)
	}
	w, err := frontend.NewWitness(a, ecc.BN254.ScalarField())
	if err != nil {
		t.Fatal(err)
	}
	pw, err := w.Public()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]fr.Element(pw.Vector().(fr.Vector)), els); diff != "" {
		t.Errorf("public witness (-gnark +receipts):\n%s", diff)
	}
}
