//go:build !linux

package overhead

import (
	"errors"
	"os/exec"
	"time"
)

func childCPU(int) (time.Duration, error) {
	return 0, errors.New("overhead: a child's CPU time is read from /proc (Linux only)")
}

func childPeakRSSMiB(int) float64 { return 0 }

func setParentDeathSignal(*exec.Cmd) {}
