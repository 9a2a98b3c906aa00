//go:build unix

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// protocolStdout moves the proving protocol off file descriptor 1: it
// returns a duplicate of standard output for the protocol and points
// descriptor 1 (and os.Stdout) at standard error, so that a line some
// library prints to stdout (gnark logs there unless disabled) lands in the
// log instead of corrupting a frame.
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
	os.Stdout = os.Stderr
	return os.NewFile(uintptr(fd), "proving-protocol"), nil
}
