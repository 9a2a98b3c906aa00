package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

// When TOLLGATE_RUN_MAIN is set the test binary is tollgate itself (so
// the tests below see its real exit status and stderr).
func init() {
	if os.Getenv("TOLLGATE_RUN_MAIN") == "1" {
		os.Args = append([]string{"tollgate"}, strings.Fields(os.Getenv("TOLLGATE_ARGS"))...)
		main()
		os.Exit(0)
	}
}

// The failure: the ledger (or a listener, or the keys) cannot be opened
// at start-up: the data directory is in use or read-only, the port is
// taken. The process must end with one line naming the path and the
// cause and exit 1 — not panic with a stack trace and exit 2.
func TestStartupFailuresAreOneClearLine(t *testing.T) {
	dir := t.TempDir()
	ledgerIsDir := filepath.Join(dir, "a")
	if err := os.MkdirAll(filepath.Join(ledgerIsDir, ledgerFile), 0o700); err != nil {
		t.Fatal(err)
	}
	dataIsFile := filepath.Join(dir, "b")
	if err := os.WriteFile(dataIsFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	inUse := filepath.Join(dir, "d")
	if err := os.MkdirAll(inUse, 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := ledger.OpenBolt(filepath.Join(inUse, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	common := "--provider-token pt-0123456789abcdef --api-key sk-0123456789 --no-prover"
	for _, tc := range []struct {
		name, args string
		want       []string
	}{
		{"ledger cannot open", "gateway --listen 127.0.0.1:0 --data " + ledgerIsDir + " " + common, []string{filepath.Join(ledgerIsDir, ledgerFile), "is a directory"}},
		{"ledger in use", "gateway --listen 127.0.0.1:0 --data " + inUse + " " + common, []string{filepath.Join(inUse, ledgerFile), "another gateway"}},
		{"data dir is a file", "gateway --listen 127.0.0.1:0 --data " + dataIsFile + " " + common, []string{dataIsFile, "not a directory"}},
		{"listen address taken", "gateway --listen " + busy.Addr().String() + " --data " + filepath.Join(dir, "c") + " " + common, []string{busy.Addr().String(), "address already in use"}},
		{"worker key unreadable", "worker --gateway http://127.0.0.1:9 --listen 127.0.0.1:0 --provider-token pt-0123456789abcdef --key " + ledgerIsDir, []string{ledgerIsDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "TOLLGATE_RUN_MAIN=1", "TOLLGATE_ARGS="+tc.args, "TOLLGATE_API_KEY=", "TOLLGATE_ADMIN_KEY=", "TOLLGATE_PROVIDER_TOKEN=")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if strings.Contains(string(out), "panic") || strings.Contains(string(out), "goroutine ") {
				t.Errorf("panicked:\n%s", out)
			}
			if !strings.HasPrefix(last, "tollgate: ") {
				t.Errorf("last line %q is not tollgate's error line", last)
			}
			for _, w := range tc.want {
				if !strings.Contains(last, w) {
					t.Errorf("last line %q does not mention %q", last, w)
				}
			}
		})
	}
}
