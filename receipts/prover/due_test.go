package prover

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/zk"
)

func TestBatchPolicy(t *testing.T) {
	now := time.Unix(1800000000, 0)
	entries := func(worker string, n int, age time.Duration) []*ledger.Entry {
		var out []*ledger.Entry
		for i := range n {
			out = append(out, &ledger.Entry{ID: fmt.Sprintf("%s-%d", worker, i), RecordedAt: now.Add(-age),
				Completion: &task.Completion{WorkerID: worker, Model: "m", ModelDigest: "d"}})
		}
		return out
	}
	type batch struct {
		Worker   string
		Capacity int
		Leaves   int
	}
	tests := []struct {
		name    string
		pending []*ledger.Entry
		want    []batch
	}{
		{"fresh leaves wait", entries("w1", 3, 0), nil},
		{"old leaves close the smallest circuit", entries("w1", 3, 2*time.Second), []batch{{"w1", 8, 3}}},
		{"old leaves pick the circuit that fits", entries("w1", 20, 2*time.Second), []batch{{"w1", 64, 20}}},
		{"a full batch closes at once", entries("w1", 70, 0), []batch{{"w1", 64, 64}}},
		{"full then old remainder", entries("w1", 70, 5*time.Second), []batch{{"w1", 64, 64}, {"w1", 8, 6}}},
		{"workers never share a batch", append(entries("w1", 2, 2*time.Second), entries("w2", 1, 2*time.Second)...),
			[]batch{{"w1", 8, 2}, {"w2", 8, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Pipeline{cfg: Config{MaxAge: time.Second, Clock: clock.NewFake(now)},
				provers: []*zk.Prover{{Capacity: 8}, {Capacity: 64}}}
			var got []batch
			for _, b := range p.due(tt.pending) {
				got = append(got, batch{b.WorkerID, b.Capacity, len(b.Receipts)})
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("batches (-got +want):\n%s", diff)
			}
		})
	}
}
