package workers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
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
	crashed := crashCopy(t, s, dir)
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

// TestRedteamRecordDamagedFrames: logs a crash or a bad disk could leave,
// and ones no honest writer writes, opened over an empty bbolt. A huge
// length field must neither allocate nor skip acknowledged frames after
// it; a valid CRC over a lying length must not yield a record; a first
// frame past the applied mark (a seq skipped) must fail the open.
func TestRedteamRecordDamagedFrames(t *testing.T) {
	ids := []string{"r0", "r1", "r2"}
	log, ends := recordFrames(t, ids...)
	withLength := func(at int, n uint32) []byte {
		b := bytes.Clone(log)
		binary.LittleEndian.PutUint32(b[at:], n)
		return b
	}
	// r1's frame re-sealed with a length 10 bytes short: a valid CRC over
	// a cut record, r2 after it.
	cut := wal.Frame{Seq: 2, Count: 1, Group: 2, Payload: log[ends[0]+wal.HeaderSize : ends[1]-10]}
	lyingLength := append(append(bytes.Clone(log[:ends[0]]), wal.AppendFrame(nil, cut)...), log[ends[1]-10:]...)
	// Intact frames from seq 5 over applied 0: seqs 1-4 are missing.
	var skipped []byte
	for i, id := range ids[:2] {
		v, err := recordValue(walT0.UnixNano(), walRecord(id))
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(5 + i)
		skipped = wal.AppendFrame(skipped, wal.Frame{Seq: seq, Count: 1, Group: seq, Payload: v})
	}
	tests := []struct {
		name    string
		log     []byte
		want    int // records that survive
		corrupt bool
	}{
		{"huge length, first frame", withLength(0, 1<<31), 0, true},
		{"huge length, last frame", withLength(ends[1], 1<<31), 2, false},
		{"length past the file, middle frame", withLength(ends[0], uint32(len(log))), 0, true},
		{"valid CRC over a lying length", lyingLength, 0, true},
		{"seq skipped at the start", skipped, 0, true},
		{"only zeros", make([]byte, 1<<20), 0, false},
		{"cut in the first header", log[:wal.HeaderSize-1], 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, recordsLog)
			if err := os.WriteFile(path, tc.log, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := openRecordStore(recordOptions{dir: dir, clock: clock.NewFake(walT0)})
			if tc.corrupt {
				if !errors.Is(err, wal.ErrCorrupt) {
					if err == nil {
						s.close()
					}
					t.Fatalf("open: err = %v, want ErrCorrupt", err)
				}
				if got, _ := os.ReadFile(path); !bytes.Equal(got, tc.log) {
					t.Error("a refused open changed the log")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			for i, id := range ids {
				if _, ok := s.get(id); ok != (i < tc.want) {
					t.Errorf("%s: held %v, want %v", id, ok, i < tc.want)
				}
			}
		})
	}
}

// TestRedteamRecordIDSurvivesReplay: a request ID that is not valid UTF-8
// is logged in the record's JSON as U+FFFD, so a replay would store it
// under another key (and up to 3× longer, past bbolt's key limit) than
// the applier does: acknowledged, then not found after a crash. Such an
// add is refused before it is logged, as other IDs bbolt cannot take are.
func TestRedteamRecordIDSurvivesReplay(t *testing.T) {
	dir := t.TempDir()
	s, err := openRecordStore(recordOptions{dir: dir, applyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	const id = "req-\xff\xfe"
	if err := s.add(versioned(id, 1)); err != nil {
		return // refused: never acknowledged
	}
	r, err := openRecordStore(recordOptions{dir: crashCopy(t, s, dir), applyDelay: time.Hour})
	if err != nil {
		t.Fatalf("reopen after a crash: %v", err)
	}
	defer r.close()
	if _, ok := r.get(id); !ok {
		t.Errorf("record %q acknowledged, then not found after a crash and replay", id)
	}
}
