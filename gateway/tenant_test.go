package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

const (
	aliceKey   = "sk-alice"
	bobKey     = "sk-bob"
	billingKey = "sk-billing"
)

// ledgerScript answers like echoScript with a completion record the real
// ledger accepts (the worker's would be checked by the link before this).
func ledgerScript(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	hexd := func(s string) string { d := sha256.Sum256([]byte(s)); return hex.EncodeToString(d[:]) }
	rq := t.Digest()
	c := &task.Completion{RequestID: t.RequestID, WorkerID: "0x" + strings.Repeat("0", 63) + "1", Model: t.Model, ModelDigest: hexd("weights"),
		RequestDigest: hex.EncodeToString(rq[:]), ResponseDigest: hexd("Hello world"), Subject: t.Subject,
		PromptTokens: 5, CompletionTokens: 2, Time: time.Unix(1_700_000_000, 0).UTC(), FinishReason: "stop"}
	if err := onEvent(task.Event{Type: task.EventDelta, Text: "Hello world", Tokens: 2}); err != nil {
		return err
	}
	return onEvent(task.Event{Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{PromptTokens: 5, CompletionTokens: 2}, Completion: c})
}

// tenantHarness is a gateway over a real bolt ledger with keys alice and
// bob, a billing key and the admin key.
func tenantHarness(t *testing.T) *harness {
	st, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, func(c *Config, d *Deps) {
		c.APIKeys = append(c.APIKeys, APIKey{ID: "alice", Key: aliceKey}, APIKey{ID: "bob", Key: bobKey})
		c.APIKeys = append(c.APIKeys, APIKey{ID: "billing", Key: billingKey, Role: RoleBilling})
		d.Ledger = ledger.New(st, ledger.Options{})
	})
	h.disp.script = ledgerScript
	return h
}

// receiptsOf makes n requests with key and returns their receipt IDs.
func (h *harness) receiptsOf(t *testing.T, key string, n int) []string {
	t.Helper()
	var out []string
	for range n {
		resp := h.do(t, "POST", "/v1/chat/completions", key, chatOK)
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, body)
		}
		out = append(out, resp.Header.Get(HeaderReceipt))
	}
	return out
}

// exportAll pages through GET /v1/receipts with key and returns every
// receipt ID and cursor it was shown.
func (h *harness) exportAll(t *testing.T, key string) (ids, cursors []string) {
	t.Helper()
	after := ""
	for page := 0; page < 50; page++ {
		resp := h.do(t, "GET", "/v1/receipts?limit=2&after="+after, key, "")
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("export: %d %s", resp.StatusCode, body)
		}
		var list struct {
			Data []struct {
				ID, Subject, Cursor string
			}
			HasMore bool   `json:"has_more"`
			Next    string `json:"next"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatal(err)
		}
		for _, r := range list.Data {
			ids, cursors = append(ids, r.ID), append(cursors, r.Cursor)
		}
		if !list.HasMore {
			return ids, cursors
		}
		after = list.Next
	}
	t.Fatal("export never ended")
	return nil, nil
}

// TestTenantIsolation plays a customer reading another customer's
// receipts: alice asks for bob's receipt by ID and pages through the
// export. She must get 404 (as for an unknown ID, so IDs do not leak) and
// an export of her own receipts only, whose cursors do not count bob's;
// the billing and admin keys see everything.
func TestTenantIsolation(t *testing.T) {
	h := tenantHarness(t)
	alice := h.receiptsOf(t, aliceKey, 3)
	bob := h.receiptsOf(t, bobKey, 2)
	alice = append(alice, h.receiptsOf(t, aliceKey, 1)...)

	for _, tc := range []struct {
		name, key, id string
		status        int
	}{
		{"alice reads her own", aliceKey, alice[0], 200},
		{"alice reads bob's", aliceKey, bob[0], 404},
		{"bob reads alice's", bobKey, alice[3], 404},
		{"billing reads bob's", billingKey, bob[1], 200},
		{"admin reads alice's", adminKey, alice[1], 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "GET", "/v1/receipts/"+tc.id, tc.key, "")
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 404 {
				unknown := readAll(t, h.do(t, "GET", "/v1/receipts/rcpt_unknown", tc.key, ""))
				if strings.ReplaceAll(body, tc.id, "X") != strings.ReplaceAll(unknown, "rcpt_unknown", "X") {
					t.Errorf("another's receipt answers %s, an unknown one %s: they differ", body, unknown)
				}
			}
		})
	}

	sorted := func(s []string) []string { s = append([]string(nil), s...); sort.Strings(s); return s }
	ids, cursors := h.exportAll(t, aliceKey)
	if diff := cmp.Diff(sorted(ids), sorted(alice)); diff != "" {
		t.Errorf("alice's export (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(cursors, []string{"1", "2", "3", "4"}); diff != "" {
		t.Errorf("alice's cursors reveal others' receipts (-got +want):\n%s", diff)
	}
	ids, _ = h.exportAll(t, bobKey)
	if diff := cmp.Diff(sorted(ids), sorted(bob)); diff != "" {
		t.Errorf("bob's export (-got +want):\n%s", diff)
	}
	for _, key := range []string{billingKey, adminKey} {
		ids, _ = h.exportAll(t, key)
		if diff := cmp.Diff(sorted(ids), sorted(append(append([]string(nil), alice...), bob...))); diff != "" {
			t.Errorf("%s export (-got +want):\n%s", key, diff)
		}
	}
}

// TestBillingKeyMakesNoRequests: a billing key reads receipts only.
func TestBillingKeyMakesNoRequests(t *testing.T) {
	h := tenantHarness(t)
	for _, path := range []string{"/v1/chat/completions", "/v1/models"} {
		method := map[bool]string{true: "POST", false: "GET"}[strings.HasSuffix(path, "completions")]
		resp := h.do(t, method, path, billingKey, chatOK)
		if body := readAll(t, resp); resp.StatusCode != 403 || !strings.Contains(body, "billing_key") {
			t.Errorf("%s with a billing key: %d %s", path, resp.StatusCode, body)
		}
	}
}
