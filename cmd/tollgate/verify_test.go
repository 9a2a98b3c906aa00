package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
	"github.com/tollgate-ai/tollgate/zk"
)

type producedMap map[string]*task.Completion

func (m producedMap) Produced(id string) (*task.Completion, bool) {
	c, ok := m[id]
	return c, ok
}

// verifyEnv is a ledger with an admitted worker, two proven receipts, and
// the files a billing system pins: the verifying key, the operator's public
// key and the exported root history.
type verifyEnv struct {
	dir, good, vkFile, history, operatorPub string
	key                                     *keys.Key
	op                                      *receipts.OperatorKey
	l                                       *ledger.Ledger
	clk                                     *clock.Fake
	mv                                      task.ModelVersion
	items                                   []json.RawMessage
}

func newVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	key, err := keys.Generate(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	e := &verifyEnv{dir: t.TempDir(), key: key, clk: clock.NewFake(time.Unix(1800000000, 0).UTC())}
	e.op, _ = receipts.GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{3}, 32)))
	e.operatorPub = filepath.Join(e.dir, "operator.key.pub")
	if err := writeOperatorKeyFiles(filepath.Join(e.dir, "operator.key"), e.op); err != nil {
		t.Fatal(err)
	}
	st, err := ledger.OpenBolt(filepath.Join(e.dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.l = ledger.New(st, ledger.Options{KeyDir: zk.TestKeyDir(), Clock: e.clk, Operator: e.op})
	ctx := context.Background()
	sum := sha256.Sum256([]byte("weights"))
	e.mv = task.ModelVersion{Name: "stories260K", Digest: hex.EncodeToString(sum[:])}
	if err := e.l.AdmitWorker(ctx, key.WorkerID(), e.mv); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	own := producedMap{}
	for i := range 2 {
		c := &task.Completion{RequestID: fmt.Sprintf("req-%d", i), WorkerID: key.WorkerID(),
			Model: e.mv.Name, ModelDigest: e.mv.Digest, RequestDigest: e.mv.Digest, ResponseDigest: e.mv.Digest,
			PromptTokens: 3, CompletionTokens: 5 + i, Time: e.clk.Now()}
		own[c.RequestID] = c
		if err := e.l.Record(ctx, fmt.Sprintf("rcpt_%d", i), c); err != nil {
			t.Fatal(err)
		}
	}
	e.clk.Advance(time.Second)
	signer := workers.NewCountersigner(key, own, nil)
	p, err := prover.New(e.l, prover.Config{KeyDir: zk.TestKeyDir(), Clock: e.clk,
		Countersign: func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return signer.Countersign(ctx, req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Step(ctx); err != nil || n != 2 {
		t.Fatalf("proved %d: %v", n, err)
	}
	if e.items, _, err = e.l.Export(ctx, "", 10); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, it := range e.items {
		lines = append(lines, string(it))
	}
	e.good = e.write(t, "export.jsonl", strings.Join(lines, "\n")+"\n")
	_, e.vkFile = zk.KeyFiles(zk.TestKeyDir(), 8)
	e.clk.Advance(time.Second)
	e.history = e.exportHistory(t, "roots.json")
	return e
}

func (e *verifyEnv) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// exportHistory is `tollgate registry export` from the ledger as of now.
func (e *verifyEnv) exportHistory(t *testing.T, name string) string {
	t.Helper()
	h, err := e.l.RootHistory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(h, "", "  ")
	return e.write(t, name, string(b))
}

// pinned are the flags of a fully pinned offline verification.
func (e *verifyEnv) pinned() []string {
	return []string{"--vk", e.vkFile, "--roots", e.history, "--operator-key", e.operatorPub, "--allow-dev-keys"}
}

// runVerifyOut runs `tollgate verify` and returns its report.
func runVerifyOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	verifyOut = &out
	defer func() { verifyOut = os.Stdout }()
	err := runVerify(context.Background(), args)
	return out.String(), err
}

// TestVerifyCommand: pinned offline verification accepts honest receipts
// and refuses tampering, development keys unless allowed, a history under
// another operator key, and duplicates.
func TestVerifyCommand(t *testing.T) {
	e := newVerifyEnv(t)
	out, err := runVerifyOut(t, append(e.pinned(), e.good)...)
	if err != nil {
		t.Fatalf("verify export: %v\n%s", err, out)
	}
	if !strings.Contains(out, "circuit "+receipts.CircuitV2+"\taudit=none\tOK") || !strings.Contains(out, "2 receipts, 2 OK") {
		t.Errorf("report:\n%s", out)
	}

	var r receipts.Receipt
	json.Unmarshal(e.items[0], &r)
	r.CompletionTokens++
	bad, _ := json.Marshal(&r)
	badFile := e.write(t, "bad.json", string(bad))
	if _, err := runVerifyOut(t, append(e.pinned(), e.good, badFile)...); err == nil {
		t.Error("tampered receipt passed tollgate verify")
	}
	caseVariant := strings.Replace(string(e.items[0]), `"prompt_tokens":3`, `"prompt_tokens":999999,"PROMPT_TOKENS":3`, 1)
	if out, err := runVerifyOut(t, append(e.pinned(), e.write(t, "case.json", caseVariant))...); err == nil || !strings.Contains(out, "exact-case") {
		t.Errorf("case-variant duplicate key passed: %v\n%s", err, out)
	}

	noDev := []string{"--vk", e.vkFile, "--roots", e.history, e.good}
	if _, err := runVerifyOut(t, noDev...); !errors.Is(err, receipts.ErrDevKey) {
		t.Errorf("development key accepted without --allow-dev-keys: %v", err)
	}
	other, _ := receipts.GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{4}, 32)))
	otherPub := filepath.Join(e.dir, "other.key")
	if err := writeOperatorKeyFiles(otherPub, other); err != nil {
		t.Fatal(err)
	}
	if _, err := runVerifyOut(t, "--vk", e.vkFile, "--roots", e.history, "--operator-key", otherPub+".pub", "--allow-dev-keys", e.good); !errors.Is(err, receipts.ErrHistory) {
		t.Errorf("history under another operator key accepted: %v", err)
	}
	// The verifying key must be pinned: a receipt naming another key fails.
	r2 := r
	r2.CompletionTokens--
	b := *r2.Batch
	b.VerifyingKeyID = "tollgate-batch-v2-8-000000000000"
	r2.Batch = &b
	other2, _ := json.Marshal(&r2)
	if out, err := runVerifyOut(t, append(e.pinned(), e.write(t, "otherkey.json", string(other2)))...); err == nil || !strings.Contains(out, "not pinned") {
		t.Errorf("receipt naming an unpinned key: %v\n%s", err, out)
	}

	// A v1 receipt is labelled unaudited (and needs a v1 key and root).
	r1 := r
	r1.CompletionTokens--
	b1 := *r1.Batch
	b1.Circuit, b1.Public.Time, b1.Calldata = receipts.CircuitV1, nil, ""
	r1.Batch = &b1
	v1, _ := json.Marshal(&r1)
	if out, err := runVerifyOut(t, append(e.pinned(), e.write(t, "v1.json", string(v1)))...); err == nil ||
		!strings.Contains(out, "circuit "+receipts.CircuitV1+" (unaudited)") {
		t.Errorf("v1 receipt: %v\n%s", err, out)
	}

	// Duplicates across the set (issue 15): the same export twice, and one
	// receipt in two files.
	out, err = runVerifyOut(t, append(e.pinned(), e.good, e.good)...)
	if err == nil || !strings.Contains(out, "4 receipts, 2 OK, 2 failed (2 duplicates)") || !strings.Contains(out, "duplicate: request ID") {
		t.Errorf("duplicates not flagged: %v\n%s", err, out)
	}
	// Without pins there is nothing to trust.
	if _, err := runVerifyOut(t, e.good); err == nil {
		t.Error("verified with nothing pinned")
	}
	if _, err := runVerifyOut(t, "--roots", e.history, "--allow-dev-keys", e.good); err == nil {
		t.Error("verified with no verifying key pinned")
	}
}

// forge plays a dishonest prover holding a worker key and the (public)
// proving key: it proves a batch of one invented receipt against any
// registry root it likes, signs it with that worker key, and writes the
// receipt JSON exactly as the gateway would.
func forge(t *testing.T, e *verifyEnv, key *keys.Key, reg *receipts.AdmissionTree, batchTime time.Time) (string, fr.Element) {
	t.Helper()
	pr, err := zk.LoadProver(zk.TestKeyDir(), 8)
	if err != nil {
		t.Fatal(err)
	}
	r := receipts.Receipt{Version: receipts.Version, ID: "rcpt_forged", Status: receipts.StatusProven, RequestID: "never-served",
		RequestDigest: e.mv.Digest, ResponseDigest: e.mv.Digest, Subject: "victim", Time: batchTime.Add(-time.Second).UTC(),
		Model: e.mv.Name, ModelDigest: e.mv.Digest, WorkerID: key.WorkerID(), PromptTokens: 4_000_000_000, CompletionTokens: 4_000_000_000}
	rc, mv, leaf, err := r.LeafFields()
	if err != nil {
		t.Fatal(err)
	}
	r.ModelVersion, r.Leaf = receipts.ElementHex(mv), receipts.ElementHex(leaf)
	wid, _ := receipts.ParseElement(key.WorkerID())
	slot, ok := reg.Find(receipts.AdmissionLeaf(wid, mv))
	if !ok {
		t.Fatal("forger's pair is not in the registry it proves against")
	}
	zb := &zk.Batch{Capacity: 8, Leaves: []zk.LeafInput{{RequestCommitment: rc, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens}},
		ModelVersion: mv, RegistryRoot: reg.Root(), RegistryIndex: slot, RegistryPath: reg.Path(slot), PublicKey: key.Public(),
		Sequence: 77, Time: batchTime.UTC()}
	msg, err := zb.Message()
	if err != nil {
		t.Fatal(err)
	}
	mb := msg.Bytes()
	if zb.Signature, err = key.Sign(mb[:]); err != nil {
		t.Fatal(err)
	}
	proof, public, err := pr.Prove(zb)
	if err != nil {
		t.Fatal(err)
	}
	leaves := make([]fr.Element, 8)
	leaves[0] = leaf
	var path []string
	for _, s := range receipts.MerklePath(leaves, 0) {
		path = append(path, receipts.ElementHex(s))
	}
	r.Batch = &receipts.BatchProof{Circuit: pr.VK.Header.Circuit, Capacity: 8, Index: 0, Path: path, Public: public,
		Signature: base64.StdEncoding.EncodeToString(zb.Signature), Proof: proof, VerifyingKeyID: pr.VK.ID, ProvenAt: batchTime.UTC()}
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	// The forgery is sound on its own terms: it verifies against the root
	// it was proven under. Only the pinned root history refuses it.
	if err := receipts.Verify(&r, pr.VK, reg.Root()); err != nil {
		t.Fatalf("forgery does not even verify under its own root: %v", err)
	}
	return e.write(t, "forged.json", string(b)), reg.Root()
}

// TestVerifyRefusesUnadmittedKey: a key the operator never admitted signs
// a batch proven against a registry of its own making; offline, with the
// pinned history, it is refused (its root was never in force).
func TestVerifyRefusesUnadmittedKey(t *testing.T) {
	e := newVerifyEnv(t)
	stranger, _ := keys.Generate(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	wid, _ := receipts.ParseElement(stranger.WorkerID())
	d, _ := receipts.ParseDigest(e.mv.Digest)
	// Its registry: the real one plus itself.
	reg, err := e.l.Registry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reg.Set(5, receipts.AdmissionLeaf(wid, receipts.ModelVersionCommitment(e.mv.Name, d)))
	forged, _ := forge(t, e, stranger, reg, e.clk.Now().Add(-time.Millisecond))
	out, err := runVerifyOut(t, append(e.pinned(), forged)...)
	if err == nil || !strings.Contains(out, receipts.ErrRegistryRoot.Error()) {
		t.Fatalf("receipt from an unadmitted key: %v\n%s", err, out)
	}
}

// TestVerifyRefusesRevokedPair: a worker admitted and later revoked keeps
// its key and its valid path in the old root. A batch it proves against the
// old root, with a batch time after the revocation, is refused offline; an
// old history export (before the revocation) refuses it too, as stale.
func TestVerifyRefusesRevokedPair(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	oldReg, _ := e.l.Registry(ctx)
	oldHistory := e.history
	e.clk.Advance(time.Minute)
	if _, err := e.l.Revoke(ctx, e.key.WorkerID(), "", ""); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	afterRevocation := e.clk.Now()
	e.clk.Advance(time.Second)
	e.history = e.exportHistory(t, "roots-after.json")
	forged, _ := forge(t, e, e.key, oldReg, afterRevocation)
	out, err := runVerifyOut(t, append(e.pinned(), forged)...)
	if err == nil || !strings.Contains(out, receipts.ErrRegistryRoot.Error()) {
		t.Fatalf("receipt of a revoked pair: %v\n%s", err, out)
	}
	// Receipts proven before the revocation still verify.
	if out, err := runVerifyOut(t, append(e.pinned(), e.good)...); err != nil {
		t.Fatalf("earlier receipts after the revocation: %v\n%s", err, out)
	}
	// A history exported before the revocation says nothing about later
	// batch times: the forgery is refused as stale, not accepted.
	e.history = oldHistory
	out, err = runVerifyOut(t, append(e.pinned(), forged)...)
	if err == nil || !strings.Contains(out, receipts.ErrStaleHistory.Error()) {
		t.Fatalf("forgery against an old history: %v\n%s", err, out)
	}
}

// TestVerifyRefusesBackdatedBatchOfRevokedKey: a revoked worker backdates
// a made-up batch to before its revocation and proves it against the root
// then in force, which holds its pair: revoking the pair does not stop
// that (zk/AUDIT.md). Revoking the key from a time before the forged batch
// time does, offline.
func TestVerifyRefusesBackdatedBatchOfRevokedKey(t *testing.T) {
	e := newVerifyEnv(t)
	ctx := context.Background()
	oldReg, _ := e.l.Registry(ctx)
	admitted := e.clk.Now()
	e.clk.Advance(time.Hour)
	if _, err := e.l.Revoke(ctx, e.key.WorkerID(), "", ""); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	backdated := admitted.Add(30 * time.Minute) // inside its admitted hour
	e.history = e.exportHistory(t, "roots-revoked.json")
	forged, _ := forge(t, e, e.key, oldReg, backdated)
	if out, err := runVerifyOut(t, append(e.pinned(), forged)...); err != nil {
		t.Fatalf("with only the pair revoked the backdated forgery verifies (as zk/AUDIT.md says); got %v\n%s", err, out)
	}
	// The key is revoked from before the forged batch time.
	if _, err := e.l.RevokeKey(ctx, e.key.WorkerID(), admitted.Add(20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Second)
	e.history = e.exportHistory(t, "roots-key-revoked.json")
	out, err := runVerifyOut(t, append(e.pinned(), forged)...)
	if err == nil || !strings.Contains(out, receipts.ErrKeyRevoked.Error()) {
		t.Fatalf("backdated batch of a revoked key: %v\n%s", err, out)
	}
	// Receipts proven before the key's revocation time still verify.
	if out, err := runVerifyOut(t, append(e.pinned(), e.good)...); err != nil {
		t.Fatalf("earlier receipts: %v\n%s", err, out)
	}
}

// TestVerifyOfflineAfterGatewayStops: a receipt served by `tollgate dev`
// (gateway, worker and prover in one process) verifies with -gateway (which
// says what it trusted), then, once the history and key are exported and
// the gateway is stopped, offline against those pins.
func TestVerifyOfflineAfterGatewayStops(t *testing.T) {
	if testing.Short() {
		t.Skip("proves a batch")
	}
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	o := devOptions{ln: ln, logger: slog.New(slog.NewTextHandler(&logs, nil))}
	o.gateway = gatewayFlags{data: data, apiKey: sdkKey, adminKey: "sk-admin-test", keys: zk.TestKeyDir()}
	o.engine = engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}
	d, err := startDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.stop()
		}
		if t.Failed() {
			t.Logf("dev log:\n%s", logs.String())
		}
	})
	if !strings.Contains(logs.String(), "development keys") {
		t.Error("dev did not warn that it proves with development keys")
	}
	url := d.URL()
	body := `{"model":"` + firstModel(d) + `","messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("X-Tollgate-Receipt")
	if resp.StatusCode != 200 || id == "" {
		t.Fatalf("chat: %d, receipt %q", resp.StatusCode, id)
	}
	get := func(path string) []byte {
		req, _ := http.NewRequest("GET", url+path, nil)
		req.Header.Set("Authorization", "Bearer "+sdkKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	var raw []byte
	// Start-up and one proof, not a timing assertion: bounded at 2 min.
	waitUntil(t, 2*time.Minute, "the receipt is proven", func() bool {
		raw = get("/v1/receipts/" + id)
		return bytes.Contains(raw, []byte(`"status":"proven"`))
	})
	r, err := receipts.ParseReceipt(raw)
	if err != nil {
		t.Fatalf("the gateway's receipt does not parse strictly: %v", err)
	}
	dir := t.TempDir()
	rcpt := filepath.Join(dir, "r.json")
	os.WriteFile(rcpt, raw, 0o600)

	// -gateway mode: it trusts the gateway for the operator key and the
	// verifying key, says so, and still refuses development keys unless told.
	out, err := runVerifyOut(t, "-gateway", url, rcpt)
	if err == nil || !strings.Contains(out, "development") {
		t.Errorf("-gateway accepted a development key: %v\n%s", err, out)
	}
	out, err = runVerifyOut(t, "-gateway", url, "--allow-dev-keys", rcpt)
	if err != nil || !strings.Contains(out, "operator key") || !strings.Contains(out, "NOT pinned: trusted because the gateway says so") {
		t.Errorf("-gateway: %v\n%s", err, out)
	}
	t.Logf("-gateway report:\n%s", out)

	// Export what a billing system pins: the history (checked against the
	// operator's public key file) and the verifying key (by hash).
	pub := filepath.Join(data, operatorKeyFile+".pub")
	hist := filepath.Join(dir, "roots.json")
	if err := runRegistryExport(context.Background(), []string{"--gateway", url, "--operator-key", pub, "--out", hist}); err != nil {
		t.Fatal(err)
	}
	vkBytes := get("/v1/zk/keys/" + r.Batch.VerifyingKeyID)
	vkFile := filepath.Join(dir, "batch.vk")
	os.WriteFile(vkFile, vkBytes, 0o600)
	if out, err := runVerifyOut(t, "-gateway", url, "--operator-key", pub, "--vk-hash", fileHash(vkBytes), "--allow-dev-keys", rcpt); err != nil ||
		strings.Contains(out, "NOT pinned") {
		t.Errorf("-gateway with pins: %v\n%s", err, out)
	}

	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if _, err := runVerifyOut(t, "-gateway", url, "--allow-dev-keys", rcpt); err == nil {
		t.Fatal("the gateway still answers")
	}
	out, err = runVerifyOut(t, "--roots", hist, "--operator-key", pub, "--vk", vkFile, "--allow-dev-keys", rcpt)
	if err != nil || !strings.Contains(out, "1 receipts, 1 OK") {
		t.Fatalf("offline: %v\n%s", err, out)
	}
	// With the gateway stopped its ledger can be exported directly too.
	hist2 := filepath.Join(dir, "roots-data.json")
	if err := runRegistryExport(context.Background(), []string{"--data", data, "--out", hist2}); err != nil {
		t.Fatal(err)
	}
	if out, err := runVerifyOut(t, "--roots", hist2, "--operator-key", pub, "--vk", vkFile, "--allow-dev-keys", rcpt); err != nil {
		t.Fatalf("offline with the data-directory export: %v\n%s", err, out)
	}
}
