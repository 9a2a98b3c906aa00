package lowprio

import (
	"os"
	"os/exec"
	"sync"
	"testing"
)

// The main thread's nice value is the one ps, top and /proc/PID/stat show
// for the whole process (the e2e test reads it to check dev runs at 0):
// Start must never lower it, although the goroutine that forks may be
// scheduled on it.
func TestStartNeverLowersTheMainThread(t *testing.T) {
	before := processNice(t)
	for range 20 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				p, err := Start(exec.Command("true"))
				if err != nil {
					t.Error(err)
					return
				}
				p.Wait()
			})
		}
		wg.Wait()
		self, err := os.ReadFile("/proc/self/stat")
		if err != nil {
			t.Fatal(err)
		}
		if got := niceOf(t, string(self)); got != before {
			t.Fatalf("the main thread (pid %d) now runs at nice %d, was %d", os.Getpid(), got, before)
		}
	}
}
