package gateway

import (
	"context"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// TestUnaryCancelledRecordWhileClientWaits plays a dishonest (or
// restarting) worker that stops an unstreamed generation on its own and
// labels its record "cancelled" while the client is still waiting: the
// gateway did not stop it, the client receives no answer, so nothing may
// be billed (docs/billing.md row 13), not the tokens the record claims.
func TestUnaryCancelledRecordWhileClientWaits(t *testing.T) {
	h := newHarness(t, nil)
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		onEvent(task.Event{Type: task.EventDelta, Text: "Once upon", Tokens: 2})
		return onEvent(partialDone(tk, task.FinishCancelled, 2, errCancelledEvent))
	}
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK)
	body := readAll(t, resp)
	if resp.StatusCode == 200 {
		t.Fatalf("200 for a cancelled generation: %s", body)
	}
	if id := resp.Header.Get(HeaderReceipt); id != "" || len(h.ledger.recorded) != 0 {
		t.Errorf("billed (receipt %q, %d records) for an answer the waiting client never got: %d %s", id, len(h.ledger.recorded), resp.StatusCode, body)
	}
	if resp.StatusCode != 502 {
		t.Errorf("status %d, want 502 (the worker failed): %s", resp.StatusCode, body)
	}
}
