package wal

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpenLogFailedPreallocLeavesFileAsFound: a preallocation that fails
// part way (a full disk: here a file size limit, EFBIG as ENOSPC would
// be) fails the open with an error that says so, and leaves the log as it
// found it: not holding the space it managed to take (on a full disk that
// is all the space left, which the bbolt file and the other store's log
// on the same disk then lack), and with its frames intact.
func TestOpenLogFailedPreallocLeavesFileAsFound(t *testing.T) {
	const limit = 1 << 20
	if dir := os.Getenv("WAL_PREALLOC_CHILD"); dir != "" {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			t.Fatal(err)
		}
		rl.Cur = limit
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			t.Fatal(err)
		}
		_, err := OpenLog(filepath.Join(dir, "x-wal"), 8<<20)
		if err == nil || !errors.Is(err, syscall.EFBIG) || !strings.Contains(err.Error(), "preallocate") {
			t.Fatalf("OpenLog over the limit: %v; want a preallocate error (EFBIG)", err)
		}
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "x-wal")
	old := frames(1, 3, 1) // what the caller's store holds already
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLogFailedPreallocLeavesFileAsFound$", "-test.v")
	cmd.Env = append(os.Environ(), "WAL_PREALLOC_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != len(old) || string(data) != string(old) {
		t.Errorf("log after a failed preallocation: %d bytes, want the %d it had", len(data), len(old))
	}
}
