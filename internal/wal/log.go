package wal

import (
	"errors"
	"fmt"
	"os"
)

// Chunk is how much a Log grows at a time past its preallocated space,
// written as zeros so that a later frame's sync never waits for block
// allocation or a size change. Callers add it to their preallocation as
// room for the group that crosses their rewind mark.
const Chunk = 1 << 20

// Log is a log file written by one goroutine: frames go at its write
// position, into space preallocated at open (grown a Chunk at a time past
// it), and each Write is fdatasync'd before it returns. A failed write or sync leaves the file's
// contents unknown (the frames may or may not reappear on replay), so the
// Log refuses every later Write.
type Log struct {
	f      *os.File
	off    int64 // where the next frames go
	size   int64 // the file's size, zeros or stale frames past off
	failed error
}

// OpenLog opens (creating if needed) the log at path for writing from
// offset 0, and grows its file with zeros to prealloc bytes first (synced)
// if it is smaller. The caller has replayed it first: whatever the file
// holds is already in the caller's store, and is overwritten.
//
// prealloc should be what the log holds before its caller rewinds it, plus
// a group: growing on the way costs the Write that does it a chunk of
// zeros synced with its frames and the file's new size, several
// milliseconds (BenchmarkLogWrite: p99.9 1.3 ms and a 10–17 ms maximum
// growing a chunk at a time, against 0.3–0.5 and 1–5 ms preallocated), and
// every append queued behind it waits as long. Preallocating 64 MiB takes
// about 65 ms at open on the development VM.
func OpenLog(path string, prealloc int64) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open log: %w", err)
	}
	l := &Log{f: f, size: fi.Size()}
	if l.size < prealloc {
		err := l.grow(prealloc - l.size)
		if err == nil {
			err = f.Sync() // the new size too
		}
		if err != nil {
			// Give back what the growth took: on a full disk that is all
			// the space left, which the caller's store file (and another
			// log on the same disk) would then lack. What the file held
			// before stays as it was.
			err = errors.Join(err, f.Truncate(fi.Size()))
			f.Close()
			return nil, fmt.Errorf("open log: preallocate %d bytes: %w", prealloc, err)
		}
	}
	return l, nil
}

// grow appends n bytes of zeros to the file, not synced.
func (l *Log) grow(n int64) error {
	zeros := make([]byte, min(n, Chunk))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := l.f.WriteAt(zeros[:k], l.size); err != nil {
			return err
		}
		l.size += k
		n -= k
	}
	return nil
}

// Write writes frames at the write position and syncs them.
func (l *Log) Write(frames []byte) error {
	if l.failed != nil {
		return l.failed
	}
	if end := l.off + int64(len(frames)); end > l.size {
		// Past the preallocated space: grow here, synced with the frames.
		if err := l.grow(max(Chunk, end-l.size)); err != nil {
			l.failed = fmt.Errorf("log write: %w", err)
			return l.failed
		}
	}
	if _, err := l.f.WriteAt(frames, l.off); err != nil {
		l.failed = fmt.Errorf("log write: %w", err)
		return l.failed
	}
	if err := Datasync(l.f); err != nil {
		l.failed = fmt.Errorf("log sync: %w", err)
		return l.failed
	}
	l.off += int64(len(frames))
	return nil
}

// Written is how many bytes of frames the log holds since it was opened
// or last rewound.
func (l *Log) Written() int64 { return l.off }

// Size is the file's size, zeros or stale frames past Written: zero only
// once emptied (or opened with no preallocation and never written).
func (l *Log) Size() int64 { return l.size }

// Rewind makes the next frames overwrite the old ones from offset 0. The
// caller's store must hold everything logged so far: a replay stops at
// the first old frame (its seq is behind).
func (l *Log) Rewind() { l.off = 0 }

// Empty truncates the log to nothing and syncs that (at close, once the
// caller's store holds all of it: the next open has nothing to scan).
func (l *Log) Empty() error {
	if l.failed != nil {
		return l.failed
	}
	if err := l.f.Truncate(0); err != nil {
		l.failed = fmt.Errorf("log truncate: %w", err)
		return l.failed
	}
	if err := l.f.Sync(); err != nil {
		l.failed = fmt.Errorf("log sync: %w", err)
		return l.failed
	}
	l.off, l.size = 0, 0
	return nil
}

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// Truncate empties the log file at path, if there is one, and syncs that:
// after a replay put everything it held into the caller's store.
func Truncate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return errors.Join(f.Truncate(0), f.Sync())
}
