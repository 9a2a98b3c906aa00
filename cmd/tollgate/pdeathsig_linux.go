package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal has the kernel kill a child (the soak's prover) if
// this process dies without stopping it.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
