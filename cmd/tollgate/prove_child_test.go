//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestProtocolStdout: after protocolStdout, whatever the process prints
// to standard output (fd 1, as a library logging there would) reaches
// standard error, and only what is written to the returned file reaches
// the parent's pipe.
func TestProtocolStdout(t *testing.T) {
	if os.Getenv("TOLLGATE_TEST_PROTOCOL_STDOUT") == "1" {
		proto, err := protocolStdout()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("library noise via os.Stdout")
		os.NewFile(1, "fd1").WriteString("library noise via fd 1\n")
		proto.WriteString("FRAME")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProtocolStdout$")
	cmd.Env = append(os.Environ(), "TOLLGATE_TEST_PROTOCOL_STDOUT=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v: %s", err, stderr.String())
	}
	if stdout.String() != "FRAME" {
		t.Errorf("protocol pipe got %q, want only the frame", stdout.String())
	}
	for _, want := range []string{"library noise via os.Stdout", "library noise via fd 1"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("standard error lacks %q: %q", want, stderr.String())
		}
	}
}

// TestProtocolStdoutKeepsDescriptor1: os.Stdout stays descriptor 1's own
// file. Replacing it (os.Stdout = os.Stderr) drops the original, whose
// finalizer closes descriptor 1 at the next garbage collection; the
// descriptor is then reused (in a plain program the runtime's poller took
// it, and writes to fd 1 failed with EINVAL), so a library's line meant for
// the log goes to whatever file took it.
func TestProtocolStdoutKeepsDescriptor1(t *testing.T) {
	if os.Getenv("TOLLGATE_TEST_PROTOCOL_FD1") == "1" {
		if _, err := protocolStdout(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if fd := os.Stdout.Fd(); fd != 1 {
			fmt.Fprintf(os.Stderr, "os.Stdout is descriptor %d: the file that owned descriptor 1 was dropped\n", fd)
			os.Exit(3)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProtocolStdoutKeepsDescriptor1$")
	cmd.Env = append(os.Environ(), "TOLLGATE_TEST_PROTOCOL_FD1=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v: %s", err, stderr.String())
	}
}
