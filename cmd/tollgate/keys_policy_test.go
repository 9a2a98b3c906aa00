package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/zk"
)

// TestCheckProvingKeys: the gateway and the prover refuse development keys
// (and an empty key directory) unless allowed; `dev` allows them.
func TestCheckProvingKeys(t *testing.T) {
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name     string
		dir      string
		allowDev bool
		have     bool
		err      string
	}{
		{"development keys refused", zk.TestKeyDir(), false, false, "development keys"},
		{"development keys allowed", zk.TestKeyDir(), true, true, ""},
		{"no keys refused", empty, false, false, "no proving keys"},
		{"no keys allowed (set up)", empty, true, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			have, err := checkProvingKeys(tt.dir, tt.allowDev, log)
			if have != tt.have || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("have %v, err %v; want %v, %q", have, err, tt.have, tt.err)
			}
		})
	}
	// A verifying key file that does not parse is an error, not skipped.
	bad := t.TempDir()
	_, vk := zk.KeyFiles(bad, 8)
	os.WriteFile(vk, []byte("not a key\n"), 0o600)
	if _, err := checkProvingKeys(bad, true, log); err == nil {
		t.Error("unparsable key accepted")
	}
}

// TestOperatorKeyCreatedOnce: the gateway's operator key is created on
// first use (0600, public half beside it) and loaded after.
func TestOperatorKeyCreatedOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", operatorKeyFile)
	log := slog.New(slog.DiscardHandler)
	k1, err := loadOrCreateOperatorKey(path, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v: %v", st.Mode(), err)
	}
	k2, err := loadOrCreateOperatorKey(path, log)
	if err != nil || k2.PublicHex() != k1.PublicHex() {
		t.Fatalf("reloaded a different key: %v", err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil || !strings.Contains(string(pub), k1.PublicHex()) || strings.Contains(string(pub), "private") {
		t.Fatalf("public key file: %v\n%s", err, pub)
	}
	if err := writeOperatorKeyFiles(path, k1); err == nil {
		t.Error("an existing operator key was overwritten")
	}
}

// `keys setup` is what the background development set-up runs (as a
// low-priority child, killed when dev stops). Killed between its proving
// and verifying key, it leaves a proving key alone: the next set-up must
// complete the pair, not skip the capacity as set up (it would then never
// be proven with, and "development keys ready" logged on every start).
func TestKeysSetupCompletesHalfWrittenKeys(t *testing.T) {
	if err := zk.EnsureDevKeys(zk.TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srcPK, _ := zk.KeyFiles(zk.TestKeyDir(), 8)
	pk, vk := zk.KeyFiles(dir, 8)
	b, err := os.ReadFile(srcPK)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runKeysSetup(t.Context(), []string{"-dir", dir, "-capacity", "8"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vk); err != nil {
		t.Fatalf("keys setup left the proving key without its verifying key: %v", err)
	}
	if _, err := zk.LoadProver(dir, 8); err != nil {
		t.Fatal(err)
	}
}
