//go:build !linux

package overhead

import (
	"errors"
	"os/exec"
	"time"
)

// ProcessCPU, ProcessPeakRSSMiB and ProcessRSSMiB read /proc (Linux only).
func ProcessCPU(int) (time.Duration, error) {
	return 0, errors.New("overhead: a child's CPU time is read from /proc (Linux only)")
}

func ProcessPeakRSSMiB(int) float64 { return 0 }

func ProcessRSSMiB(int) float64 { return 0 }

func setParentDeathSignal(*exec.Cmd) {}
