package lowprio

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// lockThread locks the calling goroutine to its thread for good: the
// thread's nice value is about to change, so no other goroutine may run on
// it, and it exits with the goroutine.
func lockThread() { runtime.LockOSThread() }

func unlockThread() { runtime.UnlockOSThread() }

// onMainThread reports whether the calling thread is the process's main
// thread (its thread ID is the process ID).
func onMainThread() bool { return unix.Gettid() == unix.Getpid() }

// lowerThread raises the calling thread's nice value to Nice (only this
// thread's: on Linux PRIO_PROCESS with a thread ID names one thread).
func lowerThread() error {
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), Nice)
}
