//go:build unix

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// protocolStdout moves the proving protocol off file descriptor 1: it
// returns a duplicate of standard output for the protocol and points
// descriptor 1 at standard error, so that a line some library prints to
// stdout (gnark logs there unless disabled) lands in the log instead of
// corrupting a frame. os.Stdout is left as it is, descriptor 1's file:
// replaced, the dropped original's finalizer would close descriptor 1 and
// the descriptor be reused.
func protocolStdout() (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "proving-protocol"), nil
}
