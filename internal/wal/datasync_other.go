//go:build !linux

package wal

import "os"

// Datasync flushes f (fsync: fdatasync is Linux's).
func Datasync(f *os.File) error { return f.Sync() }
