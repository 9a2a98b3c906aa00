package zk

import (
	"encoding/base64"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

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

// cpuClock measures the process's CPU time (user + system) over a
// benchmark: on a machine shared with other work, CPU seconds per proof
// are steadier than wall time.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) report(b *testing.B, capacity int) {
	used := (processCPU() - c.start).Seconds()
	b.ReportMetric(used/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(capacity*b.N)/used, "receipts/cpu-s")
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
			if _, err := Compile(c); err != nil { // compiled once per process; not part of a proof
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu := startCPU()
			var proof string
			for b.Loop() {
				if proof, _, err = p.Prove(batch); err != nil {
					b.Fatal(err)
				}
			}
			raw, _ := base64.StdEncoding.DecodeString(proof)
			b.ReportMetric(float64(c*b.N)/b.Elapsed().Seconds(), "receipts/s")
			b.ReportMetric(float64(len(raw)), "proof-bytes")
			cpu.report(b, c)
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
