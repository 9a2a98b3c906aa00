package zk

import (
	"bytes"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	cs "github.com/consensys/gnark/constraint/bn254"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
)

// squareCircuit is the smallest useful statement: Y = X^4.
type squareCircuit struct {
	X frontend.Variable
	Y frontend.Variable `gnark:",public"`
}

func (c *squareCircuit) Define(api frontend.API) error {
	x2 := api.Mul(c.X, c.X)
	api.AssertIsEqual(api.Mul(x2, x2), c.Y)
	return nil
}

// TestCeremony runs the MPC steps with two contributors per phase on a
// tiny circuit (the batch circuit's ceremony is the same code on a larger
// domain and takes minutes), proves with the resulting keys, and checks that
// a broken contribution chain is rejected.
func TestCeremony(t *testing.T) {
	ccs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, &squareCircuit{})
	if err != nil {
		t.Fatal(err)
	}
	r1 := ccs.(*cs.R1CS)
	n := ecc.NextPowerOfTwo(uint64(r1.GetNbConstraints()))

	var p1 [3]bytes.Buffer
	if err := phase1Init(&p1[0], n); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if err := Phase1Contribute(bytes.NewReader(p1[i-1].Bytes()), &p1[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := phase1Seal(&bytes.Buffer{}, n, []byte("beacon 1"), bytes.NewReader(p1[2].Bytes())); err == nil {
		t.Error("phase 1 verified with the first contribution missing")
	}
	var commons bytes.Buffer
	if err := phase1Seal(&commons, n, []byte("beacon 1"), bytes.NewReader(p1[1].Bytes()), bytes.NewReader(p1[2].Bytes())); err != nil {
		t.Fatal(err)
	}
	var p2 [3]bytes.Buffer
	if err := phase2Init(&p2[0], r1, bytes.NewReader(commons.Bytes())); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		if err := Phase2Contribute(bytes.NewReader(p2[i-1].Bytes()), &p2[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := finalize(r1, bytes.NewReader(commons.Bytes()), []byte("beacon 2"), bytes.NewReader(p2[2].Bytes())); err == nil {
		t.Error("phase 2 verified with the first contribution missing")
	}
	pk, vk, err := finalize(r1, bytes.NewReader(commons.Bytes()), []byte("beacon 2"), bytes.NewReader(p2[1].Bytes()), bytes.NewReader(p2[2].Bytes()))
	if err != nil {
		t.Fatal(err)
	}

	assignment := &squareCircuit{X: 3, Y: 81}
	w, err := frontend.NewWitness(assignment, ecc.BN254.ScalarField())
	if err != nil {
		t.Fatal(err)
	}
	proof, err := groth16.Prove(ccs, pk, w)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := w.Public()
	if err := groth16.Verify(proof, vk, pub); err != nil {
		t.Fatal(err)
	}
	bad, _ := frontend.NewWitness(&squareCircuit{X: 3, Y: 80}, ecc.BN254.ScalarField(), frontend.PublicOnly())
	if err := groth16.Verify(proof, vk, bad); err == nil {
		t.Error("proof verified for the wrong public input")
	}
	var sol bytes.Buffer
	if err := vk.ExportSolidity(&sol); err != nil || !bytes.Contains(sol.Bytes(), []byte("function verifyProof")) {
		t.Errorf("solidity export: %v", err)
	}
}
