package receipts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func TestDuplicates(t *testing.T) {
	d := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	base := Receipt{ID: "rcpt_1", RequestID: "req-1", RequestDigest: d("rq"), ResponseDigest: d("rs"), Subject: "k",
		Time: time.Unix(1800000000, 0).UTC(), Model: "m", ModelDigest: d("w"), PromptTokens: 3, CompletionTokens: 4}
	with := func(f func(*Receipt)) *Receipt { r := base; f(&r); return &r }
	tests := []struct {
		name string
		r    *Receipt
		dup  bool
	}{
		{"the same receipt again", with(func(r *Receipt) {}), false},
		{"another request", with(func(r *Receipt) { r.ID, r.RequestID = "rcpt_2", "req-2" }), false},
		{"same request, other receipt ID", with(func(r *Receipt) { r.ID, r.CompletionTokens = "rcpt_3", 99 }), true},
		{"same request restating another leaf", with(func(r *Receipt) { r.ID = "rcpt_4"; r.Leaf = "0x01" }), true},
	}
	var set Duplicates
	if err := set.Add(&base); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := set.Add(tt.r)
			if got := errors.Is(err, ErrDuplicate); got != tt.dup {
				t.Errorf("err = %v, want duplicate %v", err, tt.dup)
			}
		})
	}
}
