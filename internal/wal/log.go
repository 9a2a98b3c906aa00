package wal

import (
	"errors"
	"fmt"
	"os"
)

// chunk is how much a Log grows at a time, written as zeros so that a
// frame's sync never waits for block allocation or a size change.
const chunk = 1 << 20

// Log is a log file written by one goroutine: frames go at its write
// position, into space grown a chunk at a time, and each Write is
// fdatasync'd before it returns. A failed write or sync leaves the file's
// contents unknown (the frames may or may not reappear on replay), so the
// Log refuses every later Write.
type Log struct {
	f      *os.File
	off    int64 // where the next frames go
	size   int64 // the file's size, zeros or stale frames past off
	failed error
}

// OpenLog opens (creating if needed) the log at path for writing from
// offset 0. The caller has replayed it first: whatever the file holds is
// already in the caller's store, and is overwritten.
func OpenLog(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open log: %w", err)
	}
	return &Log{f: f, size: fi.Size()}, nil
}

// Write writes frames at the write position and syncs them.
func (l *Log) Write(frames []byte) error {
	if l.failed != nil {
		return l.failed
	}
	if end := l.off + int64(len(frames)); end > l.size {
		grow := max(chunk, end-l.size)
		if _, err := l.f.WriteAt(make([]byte, grow), l.size); err != nil {
			l.failed = fmt.Errorf("log write: %w", err)
			return l.failed
		}
		l.size += grow // synced with the frames
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

// Size is the file's size: zero only once emptied (or never written).
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
