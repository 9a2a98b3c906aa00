package lowprio

import (
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// The parent-death signal is tied to the forking thread: the child must
// not be killed when Start returns (the thread lives until the child
// exits).
func TestStartKeepsParentDeathSignalChildAlive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig: Linux only")
	}
	cmd := exec.Command("sh", "-c", "sleep 0.3; echo alive")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout = &out
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC() // give a finished thread every chance to be reaped
	if err := p.Wait(); err != nil {
		t.Fatalf("child: %v (killed when the forking thread ended?)", err)
	}
	if out.String() != "alive\n" {
		t.Fatalf("child printed %q", out.String())
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Wait")
	}
}
