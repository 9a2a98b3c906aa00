package zk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/constraint"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"

	"github.com/tollgate-ai/tollgate/receipts"
)

// The "before" side of the v2 benchmarks: the same measurements on the
// test-only copy of the v1 circuit (v1_test.go).
//
//	go test -run XXX -bench 'Constraints' -benchtime 1x ./zk/
//	go test -run XXX -bench 'Prove(V1)?/capacity=(8|64)$' -benchtime 3x ./zk/

func compileV1(b *testing.B, capacity int) constraint.ConstraintSystem {
	c, err := newCircuitV1(capacity)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, c)
	if err != nil {
		b.Fatal(err)
	}
	return cs
}

func BenchmarkConstraintsV1(b *testing.B) {
	for _, c := range Capacities {
		b.Run(fmt.Sprintf("capacity=%d", c), func(b *testing.B) {
			for b.Loop() {
				cs := compileV1(b, c)
				b.ReportMetric(float64(cs.GetNbConstraints()), "constraints")
				b.ReportMetric(float64(cs.GetNbConstraints())/float64(c), "constraints/receipt")
			}
		})
	}
}

// v1Keys sets up (once, cached under os.TempDir by constraint count) the
// v1 development keys for a capacity.
func v1Keys(b *testing.B, cs constraint.ConstraintSystem, capacity int) (groth16.ProvingKey, groth16.VerifyingKey) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tollgate-zk-v1-bench-%s-%d", sanitize(receipts.GnarkVersion()), cs.GetNbConstraints()))
	pkPath, vkPath := KeyFiles(dir, capacity)
	pk, vk := groth16.NewProvingKey(ecc.BN254), groth16.NewVerifyingKey(ecc.BN254)
	if rawPK, err := os.ReadFile(pkPath); err == nil {
		if rawVK, err := os.ReadFile(vkPath); err == nil {
			if _, err := pk.UnsafeReadFrom(bytes.NewReader(rawPK)); err == nil {
				if _, err := vk.ReadFrom(bytes.NewReader(rawVK)); err == nil {
					return pk, vk
				}
			}
		}
	}
	pk, vk, err := groth16.Setup(cs)
	if err != nil {
		b.Fatal(err)
	}
	os.MkdirAll(dir, 0o755)
	var pbuf, vbuf bytes.Buffer
	pk.WriteRawTo(&pbuf)
	vk.WriteTo(&vbuf)
	os.WriteFile(pkPath, pbuf.Bytes(), 0o644)
	os.WriteFile(vkPath, vbuf.Bytes(), 0o644)
	return pk, vk
}

func BenchmarkProveV1(b *testing.B) {
	for _, c := range Capacities[:3] {
		b.Run(fmt.Sprintf("capacity=%d", c), func(b *testing.B) {
			cs := compileV1(b, c)
			pk, vk := v1Keys(b, cs, c)
			batch, key := testBatch(b, c, c)
			w := assignV1(b, batch, v1Registry(b, testOtherModel, testModel))
			signV1(b, w, batch, key)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				wit, err := frontend.NewWitness(w, ecc.BN254.ScalarField())
				if err != nil {
					b.Fatal(err)
				}
				proof, err := groth16.Prove(cs, pk, wit)
				if err != nil {
					b.Fatal(err)
				}
				pub, _ := wit.Public()
				if err := groth16.Verify(proof, vk, pub); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c*b.N)/b.Elapsed().Seconds(), "receipts/s")
			cpu.report(b, c)
		})
	}
}
