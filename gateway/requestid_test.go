package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestClientRequestIDsDoNotCollideInRecords plays a client that reuses an
// X-Request-Id — its own twice, and another tenant's. The request ID is
// what a worker keys the records it will countersign by (a second record
// under one ID replaces the first, and two in one batch make it refuse
// the whole batch, every other customer's receipt with it) and what an
// auditor deduplicates billing by, so the records of three requests must
// name three request IDs, each still carrying the client's own for
// correlation, while X-Request-Id echoes what the client sent.
func TestClientRequestIDsDoNotCollideInRecords(t *testing.T) {
	h := tenantHarness(t)
	seen := map[string]string{}
	for _, key := range []string{aliceKey, aliceKey, bobKey} {
		resp := h.do(t, "POST", "/v1/chat/completions", key, chatOK, HeaderRequestID, "order-42")
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, body)
		}
		if got := resp.Header.Get(HeaderRequestID); got != "order-42" {
			t.Errorf("X-Request-Id = %q, want the client's", got)
		}
		id := resp.Header.Get(HeaderReceipt)
		r := h.do(t, "GET", "/v1/receipts/"+id, billingKey, "")
		var rec struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(readAll(t, r)), &rec); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rec.RequestID, "order-42") {
			t.Errorf("receipt request_id %q does not carry the client's ID", rec.RequestID)
		}
		if prev, dup := seen[rec.RequestID]; dup {
			t.Errorf("receipts %s and %s both name request %q", prev, id, rec.RequestID)
		}
		seen[rec.RequestID] = id
	}
}
