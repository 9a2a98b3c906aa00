package ledger

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWALOpenOnFullDisk: a disk too full for the log's preallocation (here
// a file size limit: EFBIG, as ENOSPC would be) fails the open with an
// error that says so, after the replay put the crashed log's receipts into
// bbolt; the failed open gives the space back (the log is left empty, not
// holding what it grew), and the next open with room serves every
// receipt once.
func TestWALOpenOnFullDisk(t *testing.T) {
	const limit = 8 << 20
	if path := os.Getenv("LEDGER_FULL_DISK_CHILD"); path != "" {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			t.Fatal(err)
		}
		rl.Cur = limit
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &rl); err != nil {
			t.Fatal(err)
		}
		st, err := OpenWAL(path, WALOptions{})
		if err == nil {
			st.Close()
			t.Fatal("OpenWAL opened with no room to preallocate its log")
		}
		if !strings.Contains(err.Error(), "preallocate") || !strings.Contains(err.Error(), "file too large") {
			t.Fatalf("OpenWAL: %v; want a preallocate error", err)
		}
		return
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	log, _ := walFrames(t, 1, oneEach(confEntries(0, 4))...)
	if err := os.WriteFile(path+walSuffix, log, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWALOpenOnFullDisk$", "-test.v")
	cmd.Env = append(os.Environ(), "LEDGER_FULL_DISK_CHILD="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if fi, err := os.Stat(path + walSuffix); err != nil {
		t.Fatal(err)
	} else if fi.Size() != 0 {
		t.Errorf("log after the failed open: %d bytes; want empty (replayed, its preallocation given back)", fi.Size())
	}
	st, err := OpenWAL(path, WALOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, _, err := st.List(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ids(all), ids(confEntries(0, 4)), emptyIsNil); diff != "" {
		t.Errorf("after the failed open (-got +want):\n%s", diff)
	}
}
