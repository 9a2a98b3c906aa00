//go:build !linux

package main

import "os/exec"

// setParentDeathSignal: only Linux has a parent-death signal; elsewhere a
// child outlives a parent killed with SIGKILL.
func setParentDeathSignal(*exec.Cmd) {}
