package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// childProcess finds the child of pid whose command line holds arg.
func childProcess(t *testing.T, pid int, arg string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid != pid {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(cmdline, []byte(arg)) {
			return cpid
		}
	}
	t.Fatalf("process %d has no child running %q", pid, arg)
	return 0
}

// niceOf reads a process's nice value (field 19 of /proc/PID/stat).
func niceOf(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDevReceiptProven is issue 6's end-to-end check on the default set-up:
// a streamed and a plain request through `tollgate dev` (built-in engine
// with its in-process prover) each get a receipt that becomes proven, the
// ordered export lists them, and `tollgate verify` accepts the export read
// from stdin.
func TestDevReceiptProven(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes; skipped with -short")
	}
	dir := sharedModelDir(t)
	bin := buildBinary(t)
	addr := freeAddr(t)
	base := "http://" + addr
	dev := start(t, bin, "dev", "--listen", addr, "--data", t.TempDir(), "--api-key", apiKey, "--model", dir, "--keys", testKeys(t))
	dev.waitFor(t, "registered with gateway")

	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, path, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}

	var ids []string
	for _, body := range []string{
		`{"model":"stories260K","prompt":"Once upon a time","max_tokens":12}`,
		`{"model":"stories260K","stream":true,"prompt":"The cat","max_tokens":8}`,
	} {
		resp, b := do("POST", "/v1/completions", body)
		id := resp.Header.Get("X-Tollgate-Receipt")
		if resp.StatusCode != 200 || !strings.HasPrefix(id, "rcpt_") {
			t.Fatalf("%d receipt %q: %s", resp.StatusCode, id, b)
		}
		ids = append(ids, id)
	}

	// Wait until both receipts are proven (the prover batches within ~1 s
	// once its capacity-8 keys exist; setting those up takes seconds).
	deadline := time.Now().Add(90 * time.Second)
	for _, id := range ids {
		for {
			resp, b := do("GET", "/v1/receipts/"+id, "")
			if resp.StatusCode != 200 {
				t.Fatalf("GET receipt %s: %d %s", id, resp.StatusCode, b)
			}
			var r struct{ Status string }
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.Status == "proven" {
				break
			}
			if r.Status == "failed" || time.Now().After(deadline) {
				t.Fatalf("receipt %s is %q: %s", id, r.Status, b)
			}
			time.Sleep(250 * time.Millisecond) // polling a real process's public API
		}
	}

	// They were proven by dev's low-priority child: a `prove-child` of the
	// dev process at nice 19, while dev itself stays at normal priority.
	child := childProcess(t, dev.cmd.Process.Pid, "prove-child")
	if got := niceOf(t, child); got != 19 {
		t.Errorf("prove-child %d runs at nice %d, want 19", child, got)
	}
	if got := niceOf(t, dev.cmd.Process.Pid); got != 0 {
		t.Errorf("dev itself runs at nice %d, want 0", got)
	}

	resp, b := do("GET", "/v1/receipts?limit=10", "")
	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil || len(page.Data) != 2 {
		t.Fatalf("export: %d %s", resp.StatusCode, b)
	}
	var jsonl bytes.Buffer
	for i, r := range page.Data {
		if !bytes.Contains(r, []byte(ids[i])) {
			t.Errorf("export item %d is not receipt %s in order", i, ids[i])
		}
		jsonl.Write(r)
		jsonl.WriteByte('\n')
	}
	verify := exec.Command(bin, "verify", "-gateway", base, "--allow-dev-keys", "-")
	verify.Stdin = &jsonl
	out, err := verify.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 OK, 0 failed") {
		t.Fatalf("tollgate verify: %v\n%s", err, out)
	}

	// A tampered export fails verification and exits non-zero.
	tampered := bytes.Replace(page.Data[0], []byte(`"completion_tokens":`), []byte(`"completion_tokens":1`), 1)
	bad := exec.Command(bin, "verify", "-gateway", base, "--allow-dev-keys", "-")
	bad.Stdin = bytes.NewReader(append(tampered, '\n'))
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("verify accepted a tampered receipt:\n%s", out)
	}
	dev.stop(t)
}
