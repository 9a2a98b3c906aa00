package wal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func frames(first, n uint64, group uint64) []byte {
	var b []byte
	for seq := first; seq < first+n; seq++ {
		b = AppendFrame(b, Frame{Seq: seq, Count: 1, Group: group, Payload: bytes.Repeat([]byte{'a' + byte(seq%26)}, 80)})
	}
	return b
}

// TestScanEnd: a log's end is the first frame that is not the intact
// successor of the one before; damage with a later group after it is
// ErrCorrupt.
func TestScanEnd(t *testing.T) {
	good := frames(1, 4, 1)
	frameLen := len(good) / 4
	flipped := bytes.Clone(good)
	flipped[frameLen+HeaderSize+3] ^= 1
	later := append(bytes.Clone(good[:frameLen*2]), frames(3, 2, 3)...)
	later[frameLen+HeaderSize] ^= 1
	tests := []struct {
		name    string
		log     []byte
		want    int
		corrupt bool
	}{
		{"whole", good, 4, false},
		{"torn tail", good[:len(good)-5], 3, false},
		{"zeros after", append(bytes.Clone(good), make([]byte, 300)...), 4, false},
		{"stale frames after a rewind", append(frames(9, 2, 9), good[2*frameLen:]...), 2, false},
		// Frames of the bad frame's own group after it: a torn group write.
		{"damage, same group after", flipped, 1, false},
		{"damage, later group after", later, 1, true},
		// A preallocated log: zeros between the damage and the later
		// group, and a later group's frame that starts right after zeros
		// or right at the end of the log's last non-zero bytes.
		{"damage, zeros, later group after", append(append(bytes.Clone(later[:frameLen*2]), make([]byte, 1<<20)...), later[frameLen*2:]...), 1, true},
		{"damage, zeros, later group at odd offset", append(append(bytes.Clone(later[:frameLen*2]), make([]byte, 1<<20+3)...), later[frameLen*2:]...), 1, true},
		{"damage, then only zeros", append(bytes.Clone(later[:frameLen*2]), make([]byte, 1<<20)...), 1, false},
		// A later frame whose header starts with zero bytes (a 256-byte
		// payload: length 00 01 00 00) right after zeros.
		{"damage, zeros, later frame starting with zero bytes", append(append(bytes.Clone(later[:frameLen*2]), make([]byte, 1<<20)...),
			AppendFrame(nil, Frame{Seq: 3, Count: 1, Group: 3, Payload: bytes.Repeat([]byte{'z'}, 256)})...), 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, _, err := Scan(tc.log, 1)
			if len(fs) != tc.want {
				t.Errorf("%d frames, want %d", len(fs), tc.want)
			}
			if got := errors.Is(err, ErrCorrupt); got != tc.corrupt {
				t.Errorf("err = %v, corrupt want %v", err, tc.corrupt)
			}
		})
	}
}

// TestLogRewindAndEmpty: frames written after a rewind overwrite the old
// ones and a scan ends at the first stale frame; Empty leaves nothing.
func TestLogRewindAndEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x-wal")
	l, err := OpenLog(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(frames(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	l.Rewind()
	if err := l.Write(frames(6, 2, 6)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	fs, _, err := Scan(data, 6)
	if err != nil || len(fs) != 2 || fs[0].Seq != 6 {
		t.Fatalf("after rewind: %d frames, err %v", len(fs), err)
	}
	if err := l.Empty(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 || l.Size() != 0 {
		t.Errorf("after Empty: %d bytes", fi.Size())
	}
}

// BenchmarkScanPreallocated: the end of a preallocated 64 MiB log after a
// crash (one frame, then zeros), where the search for damage runs over
// the whole tail.
func BenchmarkScanPreallocated(b *testing.B) {
	log := append(frames(1, 1, 1), make([]byte, 64<<20)...)
	for b.Loop() {
		if fs, _, err := Scan(log, 1); err != nil || len(fs) != 1 {
			b.Fatal(len(fs), err)
		}
	}
}
