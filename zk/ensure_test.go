package zk

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// Keys already there are found without waiting for the directory's lock:
// another set-up (`tollgate dev` sets up 1,024 in the background, minutes)
// must not hold up a process whose keys exist.
func TestEnsureDevKeysExistingSkipsTheLock(t *testing.T) {
	if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(TestKeyDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	done := make(chan error, 1)
	go func() { done <- EnsureDevKeys(TestKeyDir(), 8) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		<-done
		t.Fatal("EnsureDevKeys waited for another set-up's lock although the keys exist")
	}
}
