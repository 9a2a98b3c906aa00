package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
	"github.com/tollgate-ai/tollgate/zk"
)

type producedMap map[string]*workers.Completion

func (m producedMap) Produced(id string) (*workers.Completion, bool) {
	c, ok := m[id]
	return c, ok
}

// TestVerifyCommand proves two receipts, exports them as JSON lines and
// checks that `tollgate verify` accepts them and rejects a tampered copy.
func TestVerifyCommand(t *testing.T) {
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	key, err := keys.Generate(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := ledger.OpenBolt(filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := clock.NewFake(time.Unix(1800000000, 0))
	l := ledger.New(st, ledger.Options{KeyDir: zk.TestKeyDir(), Clock: clk})
	ctx := context.Background()
	sum := sha256.Sum256([]byte("weights"))
	mv := workers.ModelVersion{Name: "stories260K", Digest: hex.EncodeToString(sum[:])}
	if err := l.AdmitWorker(ctx, key.WorkerID(), mv); err != nil {
		t.Fatal(err)
	}
	own := producedMap{}
	for i := range 2 {
		c := &workers.Completion{RequestID: fmt.Sprintf("req-%d", i), WorkerID: key.WorkerID(),
			Model: mv.Name, ModelDigest: mv.Digest, RequestDigest: mv.Digest, ResponseDigest: mv.Digest,
			PromptTokens: 3, CompletionTokens: 5 + i, Time: clk.Now()}
		own[c.RequestID] = c
		if err := l.Record(ctx, fmt.Sprintf("rcpt_%d", i), c); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Second)
	signer := workers.NewCountersigner(key, own, nil)
	p, err := prover.New(l, prover.Config{KeyDir: zk.TestKeyDir(), Clock: clk,
		Countersign: func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return signer.Countersign(ctx, req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Step(ctx); err != nil || n != 2 {
		t.Fatalf("proved %d: %v", n, err)
	}
	items, _, err := l.Export(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, it := range items {
		lines = append(lines, string(it))
	}
	good := filepath.Join(dir, "export.jsonl")
	os.WriteFile(good, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	var r receipts.Receipt
	json.Unmarshal(items[0], &r)
	_, vkFile := zk.KeyFiles(zk.TestKeyDir(), 8)
	roots, _ := l.RegistryRoots(ctx)
	args := []string{"-vk", vkFile, "-registry-root", roots[0]}

	if err := runVerify(ctx, append(args, good)); err != nil {
		t.Fatalf("verify export: %v", err)
	}
	r.CompletionTokens++
	bad, _ := json.Marshal(&r)
	badFile := filepath.Join(dir, "bad.json")
	os.WriteFile(badFile, bad, 0o600)
	if err := runVerify(ctx, append(args, good, badFile)); err == nil {
		t.Fatal("tampered receipt passed tollgate verify")
	}
	// One proven request under a second receipt ID (what a double
	// countersign produced): each receipt verifies alone, the set bills
	// the request twice.
	var again receipts.Receipt
	json.Unmarshal(items[0], &again)
	again.ID = "rcpt_again"
	dup, _ := json.Marshal(&again)
	dupFile := filepath.Join(dir, "dup.json")
	os.WriteFile(dupFile, dup, 0o600)
	if err := runVerify(ctx, append(args, dupFile)); err != nil {
		t.Fatalf("the copy alone: %v", err)
	}
	if err := runVerify(ctx, append(args, good, dupFile)); err == nil {
		t.Fatal("tollgate verify passed two receipts for one request")
	}
}
