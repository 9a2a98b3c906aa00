package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestAuditDisputeProcesses is the dishonest provider as deployed: a
// `tollgate gateway` process with the auditor on, two `tollgate worker`
// processes on the built-in engine serving stories260K, and a third of a
// third provider that registers stories260K's exact digest (it holds
// copies of the two files) but answers from an OpenAI-compatible upstream
// (the upstreamtest mock) instead of running them. Every request of the
// audit-enabled key is audited, so the dishonest worker is caught within a
// few requests: the dispute is listed with its evidence at
// GET /v1/admin/disputes, counted on /metrics, the worker is marked
// disputed and gets no more requests, and `tollgate verify --dispute`
// checks the evidence against the audited receipt, proven and verified
// offline.
func TestAuditDisputeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes; skipped with -short")
	}
	model := sharedModelDir(t)

	// The cheat: same files on disk, so the same digest, never loaded.
	weights := filepath.Join(t.TempDir(), "stories260K")
	if err := os.Mkdir(weights, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"stories260K.bin", "tok512.bin"} {
		b, err := os.ReadFile(filepath.Join(model, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(weights, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := workers.ManifestDigest(weights)
	if err != nil {
		t.Fatal(err)
	}
	var upstreamCalls atomic.Int64
	up := upstreamtest.Start(upstreamtest.Config{Models: []string{"stories260K"}, OnRequest: func(path string) {
		if strings.HasSuffix(path, "/completions") {
			upstreamCalls.Add(1)
		}
	}})
	defer up.Close()

	const appKey, adminKey = "sk-e2e-audit-app", "sk-e2e-audit-admin"
	tokens := []string{"pt-e2e-provider-honest-a", "pt-e2e-provider-honest-b", "pt-e2e-provider-cheater"}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "gateway.yaml")
	addr := freeAddr(t)
	base := "http://" + addr
	cfg := fmt.Sprintf(`listen: %q
data_dir: %q
api_keys:
  - {id: app, key: %s, audit: true}
admin_keys: [%s]
provider_tokens: [%s]
open_registration: true
audit: {enabled: true, rate: 1, max_share: 1, concurrency: 1}
`, addr, filepath.Join(dir, "gw"), appKey, adminKey, strings.Join(tokens, ", "))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	bin := buildBinary(t)
	gw := start(t, bin, "gateway", "--config", cfgFile, "--keys", testKeys(t), "--allow-dev-keys")
	gw.waitFor(t, "gateway listening")
	for i := range 2 {
		wk := start(t, bin, "worker", "--gateway", base, "--engine", "llama", "--model", model,
			"--listen", freeAddr(t), "--provider-token", tokens[i], "--data", t.TempDir())
		wk.waitFor(t, "registered with gateway")
	}
	cheatAddr := freeAddr(t)
	cheat := start(t, bin, "worker", "--gateway", base, "--engine", "openai", "--upstream", up.URL,
		"--model-name", "stories260K", "--weights", weights,
		"--listen", cheatAddr, "--provider-token", tokens[2], "--data", t.TempDir())
	cheat.waitFor(t, "registered with gateway")

	client := &http.Client{Timeout: 60 * time.Second}
	get := func(path, key string) []byte {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, res.Status, b)
		}
		return b
	}
	type workerRow struct {
		WorkerID string `json:"worker_id"`
		URL      string `json:"url"`
		Provider string `json:"provider"`
		Healthy  bool   `json:"healthy"`
		Disputed string `json:"disputed"`
		Models   []struct{ Name, Digest string }
	}
	listWorkers := func() []workerRow {
		var l struct{ Data []workerRow }
		if err := json.Unmarshal(get("/v1/workers", adminKey), &l); err != nil {
			t.Fatal(err)
		}
		return l.Data
	}
	var cheatID string
	for _, w := range listWorkers() {
		if w.URL == "http://"+cheatAddr {
			cheatID = w.WorkerID
			if len(w.Models) != 1 || w.Models[0].Name != "stories260K" || w.Models[0].Digest != digest {
				t.Fatalf("the cheat registered %+v, want stories260K@%s", w.Models, digest)
			}
		}
	}
	if cheatID == "" {
		t.Fatalf("the cheating worker is not listed: %+v", listWorkers())
	}

	complete := func(i int) string {
		t.Helper()
		body := fmt.Sprintf(`{"model":"stories260K","prompt":"Once upon a time %d","max_tokens":24,"temperature":0}`, i)
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+appKey)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s %s", i, res.Status, b)
		}
		return res.Header.Get("X-Tollgate-Receipt")
	}
	type dispute struct {
		ID         string `json:"id"`
		WorkerID   string `json:"worker_id"`
		ReceiptID  string `json:"receipt_id"`
		Comparator string `json:"comparator"`
		Executions []struct {
			Role     string `json:"role"`
			WorkerID string `json:"worker_id"`
		} `json:"executions"`
	}
	var disputes []dispute
	var disputesRaw []byte
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; len(disputes) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no dispute after %d requests (%d reached the cheat's upstream)", i, upstreamCalls.Load())
		}
		complete(i)
		// Audits run after the answer (a mismatch then waits for its
		// referee): give each request's audit a moment.
		for wait := time.Now().Add(3 * time.Second); len(disputes) == 0 && time.Now().Before(wait); {
			disputesRaw = get("/v1/admin/disputes", adminKey)
			var l struct{ Data []dispute }
			if err := json.Unmarshal(disputesRaw, &l); err != nil {
				t.Fatal(err)
			}
			if disputes = l.Data; len(disputes) == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if len(disputes) != 1 || disputes[0].WorkerID != cheatID || len(disputes[0].Executions) != 3 {
		t.Fatalf("disputes %s, want one against %s", disputesRaw, cheatID)
	}
	d := disputes[0]
	t.Logf("dispute %s: worker %s, comparator %s, executions %+v", d.ID, d.WorkerID, d.Comparator, d.Executions)

	metrics := string(get("/metrics", adminKey))
	for _, want := range []struct{ name, label, value string }{
		{"tollgate_audit_disputes_total", "", "1"},
		{"tollgate_audit_audits_total", `outcome="mismatched"`, ""},
		{"tollgate_audit_share_ratio", "", ""},
	} {
		if v, ok := metricValue(metrics, want.name, want.label); !ok || (want.value != "" && v != want.value) {
			for _, line := range strings.Split(metrics, "\n") {
				if strings.Contains(line, "audit") {
					t.Log(line)
				}
			}
			t.Errorf("/metrics: %s{%s} = %q (found %v), want %q", want.name, want.label, v, ok, want.value)
		}
	}
	for _, w := range listWorkers() {
		if (w.WorkerID == cheatID) != (w.Disputed != "") {
			t.Errorf("worker %s (provider %s): disputed %q", w.WorkerID, w.Provider, w.Disputed)
		}
	}

	// Out of rotation: nothing more reaches the cheat's upstream.
	before := upstreamCalls.Load()
	var last string
	for i := range 6 {
		last = complete(1000 + i)
	}
	if n := upstreamCalls.Load() - before; n != 0 {
		t.Errorf("%d requests reached the disputed worker after its dispute", n)
	}

	// The evidence, checked offline against the audited receipt once proven.
	var receipt []byte
	for _, id := range []string{d.ReceiptID, last} {
		waitUntil(t, 2*time.Minute, "receipt "+id+" proven", func() bool {
			receipt = get("/v1/receipts/"+id, appKey)
			return strings.Contains(string(receipt), `"status":"proven"`)
		})
	}
	receipt = get("/v1/receipts/"+d.ReceiptID, appKey)
	rf, df := filepath.Join(dir, "receipt.json"), filepath.Join(dir, "disputes.json")
	if err := os.WriteFile(rf, receipt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(df, disputesRaw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "verify", "-gateway", base, "--allow-dev-keys", "--dispute", df, rf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 receipts, 1 OK") || !strings.Contains(string(out), "dispute "+d.ID) ||
		!strings.Contains(string(out), "evidence consistent") {
		t.Fatalf("tollgate verify --dispute: %v\n%s", err, out)
	}
	wantAudit := "audit=passed" // the cheat was the auditor of an honest answer
	if d.Executions[0].WorkerID == cheatID {
		wantAudit = "audit=failed"
	}
	if !strings.Contains(string(out), wantAudit) {
		t.Errorf("want %s in\n%s", wantAudit, out)
	}
	t.Logf("tollgate verify --dispute:\n%s", out)

	// Tampered evidence is refused: the audited execution's response
	// digest replaced (it no longer is the proven receipt's claim).
	var rec struct {
		ResponseDigest string `json:"response_digest"`
	}
	if err := json.Unmarshal(receipt, &rec); err != nil || rec.ResponseDigest == "" {
		t.Fatalf("receipt %s: %v", receipt, err)
	}
	if strings.Count(string(disputesRaw), rec.ResponseDigest) == 0 {
		t.Fatalf("the dispute does not carry the receipt's response digest %s", rec.ResponseDigest)
	}
	forged := strings.ReplaceAll(string(disputesRaw), rec.ResponseDigest, strings.Repeat("0", 64))
	if err := os.WriteFile(df, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "verify", "-gateway", base, "--allow-dev-keys", "--dispute", df, rf).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "FAIL") {
		t.Errorf("forged evidence verified:\n%s", out)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metricValue is the value of the first sample of a Prometheus metric
// whose labels contain label.
func metricValue(exposition, name, label string) (string, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') || !strings.Contains(rest, label) {
			continue
		}
		if i := strings.LastIndexByte(rest, ' '); i >= 0 {
			return rest[i+1:], true
		}
	}
	return "", false
}
