package ledger

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// BenchmarkValidateCompletion is the check every record pays on the
// gateway's hot path before its ledger append (no Poseidon2 hashing: that
// is the prover's).
func BenchmarkValidateCompletion(b *testing.B) {
	d := strings.Repeat("ab", 32)
	c := &task.Completion{RequestID: "req_1", WorkerID: "0x0000" + d[:60], Model: "m", ModelDigest: d, RequestDigest: d, ResponseDigest: d, Subject: "key_1", PromptTokens: 12, CompletionTokens: 34, Time: time.Now().UTC()}
	for b.Loop() {
		if err := ValidateCompletion("rcpt_1", c); err != nil {
			b.Fatal(err)
		}
	}
}
