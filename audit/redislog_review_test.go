package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/redistest"
)

// Regression test from the review of the dispute change; the bug it caught: List reads the whole list (LRANGE 0 -1); Max is only enforced by
// Add's LTRIM. Anyone writing the key (another tool, an older replica with a
// larger Max) makes every GET /v1/admin/disputes read all of it.
func TestReviewRedisLogListBounded(t *testing.T) {
	rd := redistest.New(t)
	ctx := context.Background()
	key := rd.Prefix + "disputes"
	l := &RedisLog{Client: rd.Client, Key: key, Max: 3}
	for i := range 50 {
		b, _ := json.Marshal(Dispute{ID: fmt.Sprint("d", i), WorkerID: "w", ReceiptID: "r", Divergence: -1})
		rd.Client.RPush(ctx, key, b)
	}
	got, err := l.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 3 {
		t.Errorf("listed %d disputes with Max 3", len(got))
	}
}
