// Package lowprio starts child processes at the lowest CPU priority, so
// that CPU-bound background work (proving receipts, setting up proving
// keys) runs on the CPU that serving leaves idle instead of competing with
// it.
//
// On Linux the nice value is a per-thread attribute that a forked child
// inherits from the thread that forked it. Start therefore forks from a
// goroutine locked to a thread of its own whose nice value it first raises
// to Nice: the child (and every thread it starts) runs at Nice, and no
// thread of this process changes priority. Raising a nice value needs no
// privilege. That thread stays locked, waiting for the child, until the
// child exits: a parent-death signal (SysProcAttr.Pdeathsig) is tied to the
// thread that forked, so it must outlive the child. Then the goroutine
// exits still locked, so the runtime ends the thread: no goroutine ever
// runs on a lowered thread. The main thread is never lowered (the runtime
// could not end it, and its nice value is the process's in ps and top).
// Elsewhere Start starts the child at normal priority and says so
// (Process.Lowered).
package lowprio

import (
	"os/exec"
)

// Nice is the nice value children are started at: the lowest priority,
// under which the scheduler gives a CPU-bound child only what processes at
// normal priority leave idle (a weight of 15 against 1,024).
const Nice = 19

// Process is a child started by Start.
type Process struct {
	Cmd *exec.Cmd
	// Lowered reports whether the child runs at Nice (false where the
	// platform or the thread's limits did not allow it; it then runs at
	// this process's priority).
	Lowered bool
	done    chan struct{}
	err     error
}

// Wait waits for the child to exit and returns cmd.Wait's result. It may
// be called any number of times, from any goroutine.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Done is closed once the child has exited (Wait then returns at once).
func (p *Process) Done() <-chan struct{} { return p.done }

// Start starts cmd at the lowest CPU priority and waits for it in the
// background; use the Process's Wait, never cmd.Wait.
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go p.spawn(cmd, started)
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// spawn runs on a thread of its own: it lowers it, forks cmd from it and
// waits for the child there.
func (p *Process) spawn(cmd *exec.Cmd, started chan<- error) {
	lockThread()
	if onMainThread() {
		// Never lower the main thread: its nice value is the one ps, top
		// and /proc/PID/stat show for the whole process, and it could not
		// be ended after. Hand over to a goroutine that cannot be
		// scheduled here (this one holds the thread) and let the thread go
		// once that one holds another.
		locked := make(chan struct{})
		go func() {
			lockThread()
			close(locked)
			p.run(cmd, started)
		}()
		<-locked
		unlockThread()
		return
	}
	p.run(cmd, started)
}

func (p *Process) run(cmd *exec.Cmd, started chan<- error) {
	p.Lowered = lowerThread() == nil
	if err := cmd.Start(); err != nil {
		started <- err
		return // the locked thread ends with this goroutine
	}
	started <- nil
	p.err = cmd.Wait()
	close(p.done)
}
