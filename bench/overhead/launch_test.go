package overhead

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/mockupstream"
)

// childEnv makes this test binary serve as a child part (the tollgate
// binary's `bench serve` in production), so Processes can be tested.
const childEnv = "TOLLGATE_OVERHEAD_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		cfg, err := ParseServeFlags(os.Args[1:])
		if err == nil {
			err = Serve(context.Background(), cfg, os.Stdout, StdinClosed())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func processes(t *testing.T) *Launcher {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot find the test binary:", err)
	}
	t.Setenv(childEnv, "1")
	return Processes(exe)
}

// TestRunProcesses runs the scenario with the mock upstream and the stack
// in child processes: every request is served, and the stack's own CPU and
// peak RSS are read.
func TestRunProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two child processes; skipped in -short")
	}
	res, err := Run(context.Background(), Config{
		Rates: []float64{100}, Duration: 300 * time.Millisecond, Seed: 1,
		Modes: []string{ModeJSON}, Launch: processes(t), Receipts: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layout != "processes" || len(res.Steps) != 1 || !res.Receipts {
		t.Fatalf("layout %q, %d steps", res.Layout, len(res.Steps))
	}
	st := res.Steps[0]
	if st.Errors() != 0 || st.Through.OK == 0 || st.Direct.OK == 0 {
		t.Fatalf("direct %d ok, through %d ok, errors %v %v", st.Direct.OK, st.Through.OK, st.Direct.Errors, st.Through.Errors)
	}
	if st.CPUPerRequestUS <= 0 || res.PeakRSSMiB <= 0 {
		t.Errorf("stack CPU %v µs/req, peak RSS %v MiB: not read from the child", st.CPUPerRequestUS, res.PeakRSSMiB)
	}
}

// TestChildPartLifecycle: a child part serves once it has printed its
// ready line and exits cleanly when its stdin is closed.
func TestChildPartLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process; skipped in -short")
	}
	p, err := processes(t).Upstream(context.Background(), mockupstream.Config{Latency: time.Millisecond, Tokens: 16, Models: []string{Model}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(p.URL+"/chat/completions", "application/json", strings.NewReader(string(RequestBody(false))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("child upstream answered %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := http.Get(p.URL + "/models"); err == nil {
		t.Fatal("the child still serves after Close")
	}
}

func TestParseServeFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string // error substring; "" for success
	}{
		{"upstream", []string{"-part", "upstream", "-upstream-latency", "2ms", "-tokens", "8"}, ""},
		{"stack", []string{"-part", "stack", "-upstream", "http://127.0.0.1:1/v1"}, ""},
		{"no part", nil, "is not upstream or stack"},
		{"stack without upstream", []string{"-part", "stack"}, "-upstream is required"},
		{"bad concurrency", []string{"-part", "stack", "-upstream", "http://x/v1", "-max-concurrency", "0"}, "outside"},
		{"stray argument", []string{"-part", "upstream", "extra"}, "unexpected arguments"},
		{"bad latency", []string{"-part", "upstream", "-upstream-latency", "-1ms"}, "latency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServeFlags(tc.args)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
