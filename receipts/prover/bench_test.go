package prover

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLowLoadReceipt measures one pipeline pass for a single receipt
// (countersign + prove at capacity 8 + store). A receipt at low load is
// proven within MaxAge + Interval + this.
func BenchmarkLowLoadReceipt(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		e := newEnv(b)
		e.record(fmt.Sprint("b", i), 1, true)
		e.clock.Advance(time.Second)
		p := e.pipeline(nil)
		b.StartTimer()
		if n, err := p.Step(context.Background()); err != nil || n != 1 {
			b.Fatalf("proved %d: %v", n, err)
		}
	}
}
