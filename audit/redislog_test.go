package audit

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/redistest"
)

// TestRedisLog: disputes added by two replicas are listed by both, oldest
// first, the list is trimmed to Max, and an entry someone else wrote into
// the key that is not a dispute is skipped.
func TestRedisLog(t *testing.T) {
	rd := redistest.New(t)
	ctx := context.Background()
	key := rd.Prefix + "disputes"
	a := &RedisLog{Client: rd.Client, Key: key, Max: 3}
	b := &RedisLog{Client: rd.Client, Key: key, Max: 3}
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	for i, l := range []*RedisLog{a, b, a, b} {
		if i == 2 {
			rd.Client.RPush(ctx, key, `{"id":"x","worker_id":"w","receipt_id":"r","evil":1}`)
		}
		d := Dispute{ID: string(rune('a'+i)) + "-dsp", Time: t0.Add(time.Duration(i) * time.Second), WorkerID: "0xw", ReceiptID: "rcpt_1", Divergence: -1}
		if err := l.Add(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, junk := range []string{`not json`, `{"id":"z","worker_id":"w","receipt_id":"r"} {}`, `{"id":"y"}`} {
		if d, err := parseDispute([]byte(junk)); err == nil {
			t.Errorf("%s parsed as %+v", junk, d)
		}
	}
	for _, l := range []*RedisLog{a, b} {
		got, err := l.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range got {
			ids = append(ids, d.ID)
		}
		if len(ids) != 2 || ids[0] != "c-dsp" || ids[1] != "d-dsp" {
			t.Errorf("listed %v, want [c-dsp d-dsp]: the oldest trimmed, the junk skipped", ids)
		}
	}
}
