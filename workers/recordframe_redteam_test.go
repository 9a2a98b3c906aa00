package workers

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/wal"
)

// TestRedteamRecordLyingCount: a frame with a valid CRC whose count lies
// (2 for its one record) must fail the open, not end the scan early: its
// count says the next seq is taken, so the next frame, an acknowledged
// record, looks stale and is dropped with the log truncated. The frame
// lies behind the applied mark, where the replay skipped it unchecked.
func TestRedteamRecordLyingCount(t *testing.T) {
	dir := t.TempDir()
	s, err := openRecordStore(recordOptions{dir: dir, applyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.add(versioned("r1", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.add(versioned("r2", 1)); err != nil {
		t.Fatal(err)
	}
	crashed := crashCopy(t, dir)
	path := filepath.Join(crashed, recordsLog)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fs, end, err := wal.Scan(data, 1)
	if err != nil || len(fs) != 2 {
		t.Fatalf("log as written: %d frames, %v", len(fs), err)
	}
	lying := wal.AppendFrame(nil, wal.Frame{Seq: fs[0].Seq, Count: 2, Group: fs[0].Group, Payload: fs[0].Payload})
	rest := data[len(lying):end]
	forged := append(append(lying, rest...), data[end:]...)
	if err := os.WriteFile(path, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := openRecordStore(recordOptions{dir: crashed, applyDelay: time.Hour})
	if err == nil {
		defer r.close()
		if _, ok := r.get("r2"); !ok {
			t.Fatal("open took a frame with a lying count and dropped the acknowledged record after it")
		}
		return
	}
	if !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("open: %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(forged) {
		t.Error("a refused open changed the log")
	}
}
