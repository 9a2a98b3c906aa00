package workers

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// BenchmarkRecordAdd is the cost a completion pays for its record to be
// durable on the worker (fsync'd, group-committed) before it is returned:
// serial (one request at a time) and with concurrent completions sharing
// fsyncs.
func BenchmarkRecordAdd(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		b.Run(fmt.Sprintf("parallel=%v", parallel), func(b *testing.B) {
			s, err := openRecordStore(recordOptions{dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			var n atomic.Int64
			c := func() *task.Completion {
				id := fmt.Sprintf("req-%d", n.Add(1))
				return &task.Completion{RequestID: id, WorkerID: "0x1234", Model: "m", ModelDigest: digestHex, RequestDigest: digestHex,
					ResponseDigest: digestHex, Subject: "key_1", PromptTokens: 12, CompletionTokens: 34, Time: time.Now().UTC()}
			}
			b.ReportAllocs()
			if parallel {
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.add(c()); err != nil {
							b.Fatal(err)
						}
					}
				})
				return
			}
			for b.Loop() {
				if err := s.add(c()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const digestHex = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c"
