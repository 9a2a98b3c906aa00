package overhead

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's CPU times
// (100 on every mainstream architecture).
const clockTicks = 100

// ProcessCPU reads a process's user+system CPU time, all threads, from
// /proc/PID/stat (10 ms resolution).
func ProcessCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("overhead: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("overhead: malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(raw[i+1:])
	// After ")": state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("overhead: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("overhead: malformed CPU times in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ProcessPeakRSSMiB reads a process's high-water resident set (VmHWM).
func ProcessPeakRSSMiB(pid int) float64 { return statusMiB(pid, "VmHWM:") }

// ProcessRSSMiB reads a process's resident set now (VmRSS).
func ProcessRSSMiB(pid int) float64 { return statusMiB(pid, "VmRSS:") }

// statusMiB reads one kB field of /proc/PID/status, in MiB (0: unreadable).
func statusMiB(pid int, field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(field)); ok {
			f := bytes.Fields(v)
			if len(f) > 0 {
				kib, _ := strconv.ParseFloat(string(f[0]), 64)
				return kib / 1024
			}
		}
	}
	return 0
}

// setParentDeathSignal kills a child part if the bench dies without
// closing its stdin.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
