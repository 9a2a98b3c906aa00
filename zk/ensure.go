package zk

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tollgate-ai/tollgate/receipts"
)

// EnsureDevKeys makes sure dir holds keys for capacity, running the
// development set-up if they are missing. Concurrent callers (even in other
// processes) are serialised with a lock file, so pk and vk always match.
func EnsureDevKeys(dir string, capacity int) error {
	if haveKeys(dir, capacity) {
		// Both in place (each is renamed in whole, the verifying key
		// last): no need to wait for a set-up of another capacity.
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if haveKeys(dir, capacity) {
		return nil
	}
	pkPath, vkPath := KeyFiles(dir, capacity)
	// A set-up killed while it wrote a key (SIGKILL runs no deferred
	// clean-up) left its temporary file; every development set-up writes
	// under this lock, so any such file now is stale.
	for _, path := range []string{pkPath, vkPath} {
		stale, _ := filepath.Glob(path + ".tmp*")
		for _, f := range stale {
			os.Remove(f)
		}
	}
	pk, vk, err := SetupDev(capacity)
	if err != nil {
		return err
	}
	return SaveKeys(dir, capacity, CeremonyDev, 0, pk, vk)
}

func haveKeys(dir string, capacity int) bool {
	pkPath, vkPath := KeyFiles(dir, capacity)
	_, errPK := os.Stat(pkPath)
	_, errVK := os.Stat(vkPath)
	return errPK == nil && errVK == nil
}

// TestKeyDir is where tests cache development keys between runs: under
// os.TempDir, named by circuit, gnark version and the constraint count of
// the smallest circuit, so keys from an edited circuit are never picked up.
func TestKeyDir() string {
	fingerprint := "uncompiled"
	if cs, err := Compile(Capacities[0]); err == nil {
		fingerprint = fmt.Sprint(cs.GetNbConstraints())
	}
	return filepath.Join(os.TempDir(), "tollgate-zk-keys-"+CircuitID+"-"+sanitize(receipts.GnarkVersion())+"-"+fingerprint)
}

func sanitize(s string) string {
	out := []rune(s)
	for i, r := range out {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			out[i] = '_'
		}
	}
	return string(out)
}
