// Package scripts holds the tests of the repository's shell scripts.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testDeps runs test-deps.sh with only the commands in have on its PATH
// (each a stub that succeeds), as root when root; apt-get, when in have,
// records that it ran and exits with aptExit. It returns the script's
// output and whether apt-get ran.
func testDeps(t *testing.T, root bool, aptExit string, have ...string) (string, bool) {
	t.Helper()
	return testDepsIn(t, t.TempDir(), root, aptExit, have...)
}

// testDepsIn is testDeps with TMPDIR (where a failed attempt is marked)
// set to tmp; find and touch are on the PATH too.
func testDepsIn(t *testing.T, tmp string, root bool, aptExit string, have ...string) (string, bool) {
	t.Helper()
	bin := t.TempDir()
	for _, tool := range []string{"find", "touch"} {
		if p, err := exec.LookPath(tool); err == nil {
			if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
				t.Fatal(err)
			}
		}
	}
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid := "1000"
	if root {
		uid = "0"
	}
	stub("id", "echo "+uid)
	stub("timeout", `shift; exec "$@"`)
	if err := os.Symlink("/bin/sh", filepath.Join(bin, "sh")); err != nil {
		t.Fatal(err)
	}
	ran := filepath.Join(t.TempDir(), "apt-get-ran")
	for _, name := range have {
		if name == "apt-get" {
			stub(name, "echo \"$@\" >> "+ran+"; exit "+aptExit)
			continue
		}
		stub(name, "exit 0")
	}
	cmd := exec.Command("/bin/sh", "test-deps.sh")
	cmd.Env = []string{"PATH=" + bin, "TMPDIR=" + tmp}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("test-deps.sh failed (make test would): %v\n%s", err, out)
	}
	_, statErr := os.Stat(ran)
	return string(out), statErr == nil
}

// A Chromium the tests accept under another name (chromium-browser,
// google-chrome) is not installed again on every make test.
func TestTestDepsChromiumNames(t *testing.T) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if out, ran := testDeps(t, true, "0", name, "iptables", "apt-get"); ran {
			t.Errorf("with %s on PATH, test-deps.sh ran apt-get:\n%s", name, out)
		}
	}
}

// Without root, or where apt-get fails (no network), the script says what
// is missing and succeeds: it must never fail make test.
func TestTestDepsNeverFails(t *testing.T) {
	if out, ran := testDeps(t, false, "0", "apt-get"); ran || !strings.Contains(out, "not installed") {
		t.Errorf("without root: apt-get ran %v:\n%s", ran, out)
	}
	if out, ran := testDeps(t, true, "100", "apt-get"); !ran || !strings.Contains(out, "could not install") {
		t.Errorf("apt-get failing: ran %v:\n%s", ran, out)
	}
}

// An attempt that failed (no network) is not retried for a day: every make
// test would spend minutes in apt-get again.
func TestTestDepsFailedAttemptNotRetried(t *testing.T) {
	tmp := t.TempDir()
	if _, ran := testDepsIn(t, tmp, true, "100", "apt-get"); !ran {
		t.Fatal("the first attempt did not run apt-get")
	}
	if out, ran := testDepsIn(t, tmp, true, "0", "apt-get"); ran || !strings.Contains(out, "failed in the last day") {
		t.Fatalf("a second make test retried at once (apt-get ran %v):\n%s", ran, out)
	}
}
