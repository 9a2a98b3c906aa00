package gateway

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// TestRevocationThroughTheGateway drives admission, the published root
// history, revocation and reinstatement through the gateway's routes with
// the real registrar, the worker's real client and the real ledger.
func TestRevocationThroughTheGateway(t *testing.T) {
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ledger.OpenBolt(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := clock.NewFake(time.Unix(1800000000, 0).UTC())
	op, _ := receipts.GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{5}, 32)))
	led := ledger.New(st, ledger.Options{Clock: clk, Operator: op})
	reg := &fakeRegistry{}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar, d.Ledger, d.Clock = reg, registrar, led, clk })
	key, _ := keys.Generate(nil)
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://" + h.ln.Addr().String(), ProviderToken: providerToken,
		Key: key, AdvertiseURL: "http://127.0.0.1:9", Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	history := func() (*receipts.RootHistory, *receipts.Roots) {
		t.Helper()
		resp := h.do(t, "GET", "/v1/zk/registry", "", "")
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("registry: %d %s", resp.StatusCode, body)
		}
		hist, err := receipts.ParseRootHistory([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		roots, err := hist.Verify(op.Public())
		if err != nil {
			t.Fatal(err)
		}
		return hist, roots
	}
	wid, _ := receipts.ParseElement(key.WorkerID())
	mv := receipts.ModelVersionCommitment("tiny", [32]byte(bytes.Repeat([]byte{0xab}, 32)))
	leaf := receipts.AdmissionLeaf(wid, mv)
	inRoot := func(roots *receipts.Roots) bool {
		tree, _ := led.Registry(ctx)
		root, _, err := roots.RootAt(clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		slot, ok := tree.Find(leaf)
		if !ok {
			return false
		}
		got := receipts.RootFromPath(leaf, slot, tree.Path(slot))
		return got.Equal(&root)
	}

	if resp := h.do(t, "GET", "/v1/zk/registry", "", ""); resp.StatusCode != 404 {
		t.Fatalf("registry before any admission: %d", resp.StatusCode)
	}
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if hist, roots := history(); len(hist.Entries) != 1 || hist.OperatorKey != op.PublicHex() || !inRoot(roots) {
		t.Fatalf("after registering: %+v", hist)
	}

	body := `{"worker_id":"` + key.WorkerID() + `"}`
	for _, tt := range []struct {
		name, key, body string
		status          int
	}{
		{"client key", testKey, body, 403},
		{"no key", "", body, 401},
		{"uppercase worker ID", adminKey, `{"worker_id":"` + strings.ToUpper(key.WorkerID()) + `"}`, 400},
		{"unknown field", adminKey, `{"worker_id":"` + key.WorkerID() + `","all":true}`, 400},
		{"digest without model", adminKey, `{"worker_id":"` + key.WorkerID() + `","digest":"` + strings.Repeat("ab", 32) + `"}`, 400},
	} {
		if resp := h.do(t, "POST", "/v1/admin/revoke", tt.key, tt.body); resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s", tt.name, resp.StatusCode, readAll(t, resp))
		}
	}
	clk.Advance(time.Minute)
	resp := h.do(t, "POST", "/v1/admin/revoke", adminKey, body)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"removed":[{"name":"tiny"`) {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	if reg.get(key.WorkerID()) != nil {
		t.Error("revoked worker still in rotation")
	}
	if hist, roots := history(); len(hist.Entries) != 2 || inRoot(roots) {
		t.Fatalf("after revoking: %d entries, pair in root %v", len(hist.Entries), inRoot(roots))
	}
	// It cannot re-admit itself by registering again.
	if _, err := m.Register(ctx); errCode(err) != "worker_revoked" {
		t.Fatalf("re-registration of a revoked worker: %v", err)
	}
	if reg.get(key.WorkerID()) != nil {
		t.Error("revoked worker back in rotation")
	}
	// Reinstated, its next registration admits it again.
	clk.Advance(time.Minute)
	resp = h.do(t, "POST", "/v1/admin/reinstate", adminKey, body)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"still_revoked":[]`) {
		t.Fatalf("reinstate: %d %s", resp.StatusCode, b)
	}
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if hist, roots := history(); len(hist.Entries) != 3 || !inRoot(roots) {
		t.Fatalf("after reinstating: %d entries", len(hist.Entries))
	}

	// A compromised key is revoked from a time in the past: the history
	// lists it, and it is never admitted again.
	clk.Advance(time.Minute)
	from := clk.Now().Add(-90 * time.Second).Format(time.RFC3339Nano)
	if resp := h.do(t, "POST", "/v1/admin/revoke", adminKey, `{"worker_id":"`+key.WorkerID()+`","model":"tiny","from":"`+from+`"}`); resp.StatusCode != 400 {
		t.Errorf("key revocation for one model: %d", resp.StatusCode)
	}
	future := clk.Now().Add(time.Hour).Format(time.RFC3339Nano)
	if resp := h.do(t, "POST", "/v1/admin/revoke", adminKey, `{"worker_id":"`+key.WorkerID()+`","from":"`+future+`"}`); resp.StatusCode != 400 {
		t.Errorf("key revocation from the future: %d", resp.StatusCode)
	}
	resp = h.do(t, "POST", "/v1/admin/revoke", adminKey, `{"worker_id":"`+key.WorkerID()+`","from":"`+from+`"}`)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"key_revoked_from"`) {
		t.Fatalf("key revocation: %d %s", resp.StatusCode, b)
	}
	hist, roots := history()
	if last := hist.Entries[len(hist.Entries)-1]; len(last.Revoked) != 1 || last.Revoked[0].WorkerID != key.WorkerID() {
		t.Fatalf("last entry %+v", last)
	}
	if _, revoked := roots.KeyRevoked(key.WorkerID(), clk.Now().Add(-time.Minute)); !revoked {
		t.Error("key not revoked for a batch dated after from")
	}
	h.do(t, "POST", "/v1/admin/reinstate", adminKey, body)
	if _, err := m.Register(ctx); errCode(err) != "worker_revoked" {
		t.Fatalf("burned key registered again: %v", err)
	}
}
