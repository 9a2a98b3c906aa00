package zk

import (
	"os"
	"path/filepath"
	"testing"
)

// A set-up killed while it wrote a key (`tollgate dev` stopped during the
// background set-up of 1,024, whose proving key is 165 MiB) leaves its
// temporary file behind; the next set-up of that capacity removes it.
func TestEnsureDevKeysRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	pk, vk := KeyFiles(dir, 8)
	stale := []string{pk + ".tmp123456", vk + ".tmp42"}
	for _, f := range stale {
		if err := os.WriteFile(f, []byte("half a key"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(dir, "batch-64.pk.tmp1") // another capacity's: left alone
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDevKeys(dir, 8); err != nil {
		t.Fatal(err)
	}
	for _, f := range stale {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s is still there after the set-up", filepath.Base(f))
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another capacity's temporary file was removed: %v", err)
	}
	if _, err := LoadProver(dir, 8); err != nil {
		t.Fatal(err)
	}
}
