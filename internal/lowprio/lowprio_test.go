package lowprio

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// niceOf reads a process's nice value from /proc/PID/stat (field 19).
func niceOf(t *testing.T, stat string) int {
	t.Helper()
	// The command name (field 2) is in parentheses and may hold spaces.
	rest := stat[strings.LastIndexByte(stat, ')')+2:]
	f := strings.Fields(rest)
	n, err := strconv.Atoi(f[16]) // field 19 counting from 1; rest starts at field 3
	if err != nil {
		t.Fatalf("stat %q: %v", stat, err)
	}
	return n
}

// processNice is this test process's nice value; it skips the test where
// nice values are not per thread or the process already runs at Nice.
func processNice(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("nice values per thread: Linux only")
	}
	self, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	n := niceOf(t, string(self))
	if n >= Nice {
		t.Skipf("this test already runs at nice %d", n)
	}
	return n
}

func TestStartLowersOnlyTheChild(t *testing.T) {
	before := processNice(t)
	// Several children at once, each forked from its own thread.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("cat", "/proc/self/stat")
			var out strings.Builder
			cmd.Stdout = &out
			p, err := Start(cmd)
			if err != nil {
				t.Error(err)
				return
			}
			if err := p.Wait(); err != nil {
				t.Error(err)
				return
			}
			if !p.Lowered {
				t.Error("Lowered is false on Linux")
			}
			if got := niceOf(t, out.String()); got != Nice {
				t.Errorf("child nice %d, want %d", got, Nice)
			}
		}()
	}
	wg.Wait()
	// No thread of this process stays lowered: each lowered thread was
	// locked to its goroutine, and exits with it just after Wait returns.
	deadline := time.Now().Add(5 * time.Second)
	for {
		lowered := loweredThreads(t, before)
		if len(lowered) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: threads %v of this process still at another nice value than %d", os.Getpid(), lowered, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loweredThreads lists this process's threads whose nice value is not want.
func loweredThreads(t *testing.T, want int) []string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		if niceOf(t, string(b)) != want {
			out = append(out, task.Name())
		}
	}
	return out
}

func TestStartFailure(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/binary")); err == nil {
		t.Fatal("starting a missing binary succeeded")
	}
}
