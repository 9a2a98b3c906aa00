package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers/engine/llama"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// TestAuditDisputesDishonestWorker runs the gateway as `tollgate gateway`
// wires it, with the auditor on, and three registered workers of three
// providers: two on the built-in engine with stories260K, one registering
// stories260K's digest while running the simulator. Requests of a key that
// allows audits are audited; the dishonest worker ends up in
// GET /v1/admin/disputes with evidence, out of rotation (and marked on the
// status page), the audited receipts carry their audit state, and the
// honest workers are never disputed.
func TestAuditDisputesDishonestWorker(t *testing.T) {
	t.Setenv("TOLLGATE_SHARED", filepath.Join("..", "..", "..", "shared")) // from the worktree's cmd/tollgate
	dir := sharedModelDir()
	if dir == "" {
		t.Skip("stories260K not found")
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	const appKey, adminKey = "sk-audit-app", "sk-audit-admin"
	tokens := []string{"pt-audit-provider-a1", "pt-audit-provider-b2", "pt-audit-provider-c3"}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.APIKeys = []config.APIKey{{ID: "app", Key: appKey, Audit: true}}
	cfg.AdminKeys = []string{adminKey}
	cfg.ProviderTokens = tokens
	cfg.OpenRegistration = true
	cfg.Audit = config.Audit{Enabled: true, Rate: 1, MaxShare: 1, Concurrency: 1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	gw, err := startGateway(cfg, ln, stackOptions{receipts: true}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.stop() })

	var claim task.ModelVersion
	ids := make([]string, 3)
	for i := range 3 {
		l, err := llama.Open(dir, llama.Options{ModelName: "stories260K", Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		var eng task.Engine = l
		claim = l.Models()[0]
		if i == 2 {
			s, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
			if err != nil {
				t.Fatal(err)
			}
			eng = claimed{s, claim}
		}
		key, err := loadOrCreateKey(filepath.Join(t.TempDir(), "worker.key"), logger)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = key.WorkerID()
		wln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runWorkerNode(ctx, wln, workerNode{gatewayURL: gw.URL(), providerToken: tokens[i], key: key,
				advertise: "http://" + wln.Addr().String(), engine: eng, dataDir: t.TempDir(), logger: logger.With("worker", i)})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	dishonest := ids[2]
	waitUntil(t, 30*time.Second, "three workers in rotation", func() bool {
		n := 0
		for _, w := range gw.sched.Workers() {
			if w.Healthy {
				n++
			}
		}
		return n == 3
	})

	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path, key string, body any) []byte {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, gw.URL()+path, rd)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s %s", method, path, res.Status, b)
		}
		return b
	}
	var receiptIDs []string
	for i := 0; i < 30; i++ {
		req, _ := http.NewRequest(http.MethodPost, gw.URL()+"/v1/completions", strings.NewReader(
			fmt.Sprintf(`{"model":"stories260K","prompt":"Once upon a time %d","max_tokens":16,"temperature":0}`, i)))
		req.Header.Set("Authorization", "Bearer "+appKey)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, res.Status)
		}
		receiptIDs = append(receiptIDs, res.Header.Get("X-Tollgate-Receipt"))
	}

	var disputes []audit.Dispute
	waitUntil(t, 60*time.Second, "the auditor disputes a worker", func() bool {
		var list struct{ Data []audit.Dispute }
		if err := json.Unmarshal(do(http.MethodGet, "/v1/admin/disputes", adminKey, nil), &list); err != nil {
			t.Fatal(err)
		}
		disputes = list.Data
		return len(disputes) > 0
	})
	for _, d := range disputes {
		if d.WorkerID != dishonest {
			t.Errorf("honest worker %s disputed: %+v", d.WorkerID, d)
		}
		if len(d.Executions) != 3 || d.Model != claim.Name || d.ModelDigest != claim.Digest {
			t.Errorf("dispute evidence: %+v", d)
		}
	}
	for _, w := range gw.sched.Workers() {
		if (w.WorkerID == dishonest) != (w.Disputed != "") || (w.WorkerID == dishonest && w.Healthy) {
			t.Errorf("worker %s: disputed %q healthy %v", w.WorkerID, w.Disputed, w.Healthy)
		}
	}
	if page := do(http.MethodGet, "/", "", nil); !bytes.Contains(page, []byte("disputed")) || !bytes.Contains(page, []byte("Audits")) {
		t.Error("status page shows neither the audit card nor the disputed worker")
	}
	// Audited receipts carry their state, in GET and in the export.
	waitUntil(t, 60*time.Second, "the queued audits finish", func() bool {
		st := gw.auditor.Stats()
		return st.Audited+st.Errors+st.SkippedNoPeer+st.Inconclusive >= st.Sampled-st.Dropped-st.SkippedBudget
	})
	states := map[string]string{}
	var export struct{ Data []receipts.Receipt }
	if err := json.Unmarshal(do(http.MethodGet, "/v1/receipts?limit=100", appKey, nil), &export); err != nil {
		t.Fatal(err)
	}
	for _, r := range export.Data {
		states[r.ID] = r.Audit
		if r.Audit == audit.StateFailed && r.WorkerID != dishonest {
			t.Errorf("receipt %s of honest worker %s audit failed", r.ID, r.WorkerID)
		}
	}
	failed := 0
	for _, d := range disputes {
		if states[d.ReceiptID] == audit.StateFailed {
			failed++
		}
	}
	if failed == 0 && len(disputes) > 0 && disputes[0].Executions[0].WorkerID == dishonest {
		t.Errorf("disputed receipt %s not marked failed (states %v)", disputes[0].ReceiptID, states)
	}
	var one receipts.Receipt
	if err := json.Unmarshal(do(http.MethodGet, "/v1/receipts/"+receiptIDs[0], appKey, nil), &one); err != nil {
		t.Fatal(err)
	}
	if one.Audit != states[one.ID] {
		t.Errorf("GET receipt audit %q, export %q", one.Audit, states[one.ID])
	}
	t.Logf("stats %+v; %d disputes", gw.auditor.Stats(), len(disputes))
}
