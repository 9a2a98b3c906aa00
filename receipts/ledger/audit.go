package ledger

import (
	"context"
	"fmt"
)

// auditKey is the store meta key holding a receipt's audit state. Meta
// lives in both stores (a Redis hash in the shared mode), so every replica
// renders the same state.
func auditKey(receiptID string) string { return "audit/" + receiptID }

// Audit states a receipt may carry (package audit sets them).
var auditStates = map[string]bool{"passed": true, "failed": true, "inconclusive": true}

// MarkAudit records the outcome of a spot re-execution of a receipt's
// request: it appears as the receipt JSON's "audit" field and in the
// export. It satisfies audit.Marker.
func (l *Ledger) MarkAudit(ctx context.Context, receiptID, state string) error {
	if !auditStates[state] {
		return fmt.Errorf("ledger: unknown audit state %q", state)
	}
	if _, _, err := l.store.Get(ctx, receiptID); err != nil {
		return err
	}
	return l.store.PutMeta(ctx, auditKey(receiptID), []byte(state))
}

// auditState is a receipt's audit state, "" when it was never audited.
func (l *Ledger) auditState(ctx context.Context, receiptID string) (string, error) {
	v, err := l.store.Meta(ctx, auditKey(receiptID))
	return string(v), err
}
