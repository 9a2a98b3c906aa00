package loadgen

import (
	"context"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl's PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// maxNap bounds one sleep, so a cancelled run stops within it.
const maxNap = 20 * time.Millisecond

// pacer sleeps until each send time with a kernel high-resolution timer on
// a thread of its own, which holds a P of its own while it sleeps: the run
// adds one to GOMAXPROCS meanwhile (shared by concurrent runs), so the
// generator's other goroutines keep every P they had. Go's timers are exact while the process is busy but
// only to the millisecond while it idles (the runtime waits for them in
// epoll_wait, whose timeout is in milliseconds): a generator paced by them
// sends up to 1 ms late and, worse, sends everything due within that
// millisecond at once, turning a Poisson schedule into bursts that load
// the server harder than the schedule says. nanosleep with a 1 ns timer
// slack wakes within a few microseconds of the due time.
type pacer struct{}

var (
	extraPMu sync.Mutex
	extraPN  int // runs pacing now
)

// newPacer locks the calling goroutine to its thread for the run.
func newPacer() *pacer {
	extraPMu.Lock()
	if extraPN == 0 {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	extraPN++
	extraPMu.Unlock()
	runtime.LockOSThread()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	return &pacer{}
}

// stop restores the thread's default timer slack and unlocks it.
func (p *pacer) stop() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 0, 0)
	runtime.UnlockOSThread()
	extraPMu.Lock()
	extraPN--
	if extraPN == 0 {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) - 1)
	}
	extraPMu.Unlock()
}

// sleepUntil returns at due, or early with false when ctx ends.
func (p *pacer) sleepUntil(ctx context.Context, due time.Time) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		d := time.Until(due)
		if d <= 0 {
			return true
		}
		ts := syscall.NsecToTimespec(int64(min(d, maxNap)))
		_ = syscall.Nanosleep(&ts, nil)
	}
}
