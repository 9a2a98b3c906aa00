package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tollgate-ai/tollgate/receipts"
)

// TestMarkAudit: an audit state shows in the receipt and in the export,
// survives a reopen, and only known states of known receipts are taken.
func TestMarkAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	l := openLedger(t, path)
	ctx := context.Background()
	for i := range 3 {
		if err := l.Record(ctx, fmt.Sprintf("rcpt_%d", i), completion(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, id, state string
		wantErr         bool
	}{
		{"passed", "rcpt_0", "passed", false},
		{"failed", "rcpt_1", "failed", false},
		{"unknown state", "rcpt_2", "maybe", true},
		{"unknown receipt", "rcpt_9", "passed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.MarkAudit(ctx, tc.id, tc.state); (err != nil) != tc.wantErr {
				t.Fatalf("MarkAudit(%s, %s) = %v, want error %v", tc.id, tc.state, err, tc.wantErr)
			}
		})
	}
	want := map[string]string{"rcpt_0": "passed", "rcpt_1": "failed", "rcpt_2": ""}
	check := func(l *Ledger) {
		t.Helper()
		for id, st := range want {
			raw, err := l.Receipt(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var r receipts.Receipt
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if r.Audit != st {
				t.Errorf("receipt %s audit = %q, want %q", id, r.Audit, st)
			}
		}
		items, _, err := l.Export(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range items {
			var r receipts.Receipt
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if r.Audit != want[r.ID] {
				t.Errorf("export %s audit = %q, want %q", r.ID, r.Audit, want[r.ID])
			}
		}
	}
	check(l)
	l.store.Close()
	check(openLedger(t, path))
}
