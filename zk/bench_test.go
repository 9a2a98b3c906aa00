package zk

import (
	"encoding/base64"
	"fmt"
	"os"
	"testing"

	"github.com/tollgate-ai/tollgate/receipts"
)

// Benchmarks (not run by `go test` without -bench). Keys come from
// TOLLGATE_ZK_KEYS when it holds the capacity, else are set up once into TestKeyDir (capacity
// 1024 set-up takes minutes on two cores).
//
//	go test -run XXX -bench . -benchtime 3x ./zk/
//
// bench_v1_test.go measures the same on the test-only v1 circuit (the
// "before" of the v2 audit); AUDIT.md records the figures.

func benchKeyDir(b *testing.B, capacity int) string {
	if dir := os.Getenv("TOLLGATE_ZK_KEYS"); dir != "" {
		if pk, _ := KeyFiles(dir, capacity); fileExists(pk) {
			return dir
		}
	}
	dir := TestKeyDir()
	if err := EnsureDevKeys(dir, capacity); err != nil {
		b.Fatal(err)
	}
	return dir
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func BenchmarkConstraints(b *testing.B) {
	for _, c := range Capacities {
		b.Run(fmt.Sprintf("capacity=%d", c), func(b *testing.B) {
			for b.Loop() {
				compiled.Delete(c)
				cs, err := Compile(c)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(cs.GetNbConstraints()), "constraints")
				b.ReportMetric(float64(cs.GetNbConstraints())/float64(c), "constraints/receipt")
			}
		})
	}
}

func BenchmarkProve(b *testing.B) {
	for _, c := range Capacities {
		b.Run(fmt.Sprintf("capacity=%d", c), func(b *testing.B) {
			p, err := LoadProver(benchKeyDir(b, c), c)
			if err != nil {
				b.Fatal(err)
			}
			batch, _ := testBatch(b, c, c)
			b.ReportAllocs()
			var proof string
			for b.Loop() {
				if proof, _, err = p.Prove(batch); err != nil {
					b.Fatal(err)
				}
			}
			raw, _ := base64.StdEncoding.DecodeString(proof)
			b.ReportMetric(float64(c*b.N)/b.Elapsed().Seconds(), "receipts/s")
			b.ReportMetric(float64(len(raw)), "proof-bytes")
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	p, err := LoadProver(benchKeyDir(b, 8), 8)
	if err != nil {
		b.Fatal(err)
	}
	batch, _ := testBatch(b, 8, 8)
	proof, pub, err := p.Prove(batch)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := receipts.VerifyProof(p.VK, &pub, proof); err != nil {
			b.Fatal(err)
		}
	}
}
