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
