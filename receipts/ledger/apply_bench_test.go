package ledger

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	idgen "github.com/tollgate-ai/tollgate/internal/ids"
)

// BenchmarkApplyPages measures what the applier writes into bbolt per
// record once the ledger holds 50,000 receipts, with request and receipt
// IDs as the gateway makes them ("gateway": time-ordered receipt IDs,
// random request IDs, ids.Receipt/ids.Request), both time ordered
// ("ordered", ids.Ordered) and both fully random ("random", ids.New, what
// they were before). bbolt rewrites every page a transaction dirties;
// random keys dirty one leaf page of the ID and request indexes per
// record, scattered, and those page writes and their syncs stall the log's
// fdatasyncs behind them (the p99 of receipts on). It reports bbolt's page writes and bytes per record.
func BenchmarkApplyPages(b *testing.B) {
	for _, kind := range []struct {
		name      string
		rcpt, req func() string
	}{
		{"gateway", idgen.Receipt, idgen.Request},
		{"ordered", func() string { return idgen.Ordered("rcpt_", time.Now()) }, func() string { return idgen.Ordered("req_", time.Now()) }},
		{"random", func() string { return idgen.New("rcpt_") }, func() string { return idgen.New("req_") }},
	} {
		b.Run(kind.name, func(b *testing.B) {
			st, err := OpenWAL(filepath.Join(b.TempDir(), "l.db"), WALOptions{ApplyDelay: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			n := 0
			entry := func() *Entry {
				n++
				e := confEntry(n)
				e.ID, e.Completion.RequestID = kind.rcpt(), kind.req()
				return e
			}
			// One transaction of 200, as at 2,000 req/s with the 100 ms
			// apply delay: appended, then applied.
			applyOne := func() {
				var es []*Entry
				for range 200 {
					es = append(es, entry())
				}
				if err := st.Append(ctx, es); err != nil {
					b.Fatal(err)
				}
				if err := st.caughtUp(ctx); err != nil {
					b.Fatal(err)
				}
			}
			for range 250 { // fill: 50,000 receipts
				applyOne()
			}
			before := st.b.db.Stats().TxStats
			recs := 0
			b.ResetTimer()
			for b.Loop() {
				applyOne()
				recs += 200
			}
			b.StopTimer()
			after := st.b.db.Stats().TxStats
			writes := after.GetWrite() - before.GetWrite()
			b.ReportMetric(float64(writes)/float64(recs), "page-writes/record")
			b.ReportMetric(float64(writes)*float64(st.b.db.Info().PageSize)/float64(recs), "bytes/record")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(recs), "µs/record")
		})
	}
}
