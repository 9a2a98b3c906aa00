// Package e2e runs Tollgate as a user deploys it: the tollgate binary is
// built, then `tollgate gateway` and `tollgate worker` run as two processes,
// the worker registers over HTTP, and requests are served through both.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/zk"
)

const (
	apiKey        = "sk-e2e-key-123"
	providerToken = "pt-e2e-0123456789abcdef"
)

// process is a started tollgate subcommand whose stderr is scanned.
type process struct {
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder
}

func start(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), lines: make(chan string, 1024)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", args[0], p.log.String())
		}
	})
	return p
}

// waitFor reads the process's log until a line contains want.
func (p *process) waitFor(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("process exited before logging %q", want)
			}
			p.log.WriteString(line + "\n")
			if strings.Contains(line, want) {
				return line
			}
		case <-timeout:
			t.Fatalf("no log line with %q", want)
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	go func() {
		for line := range p.lines {
			p.log.WriteString(line + "\n")
		}
	}()
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("%s exited with %v", p.cmd.Args[1], err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testKeys returns the cached capacity-8 development keys shared by the
// module's tests (zk.TestKeyDir), setting them up on first use, so a process
// under test proves at once instead of running its own set-up.
func testKeys(t *testing.T) string {
	t.Helper()
	dir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(dir, zk.Capacities[0]); err != nil {
		t.Fatal(err)
	}
	return dir
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tollgate")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/tollgate-ai/tollgate/cmd/tollgate")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

func TestGatewayAndWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts processes; skipped with -short")
	}
	bin := buildBinary(t)
	addr := freeAddr(t)
	base := "http://" + addr
	gw := start(t, bin, "gateway", "--listen", addr, "--data", t.TempDir(), "--api-key", apiKey,
		"--admin-key", "sk-e2e-admin", "--provider-token", providerToken, "--open-registration",
		"--keys", testKeys(t), "--allow-dev-keys")
	gw.waitFor(t, "gateway listening")
	wk := start(t, bin, "worker", "--gateway", base, "--engine", "sim", "--profile", "sim-tiny",
		"--listen", "127.0.0.1:0", "--provider-token", providerToken, "--data", t.TempDir())
	wk.waitFor(t, "registered with gateway")

	client := &http.Client{Timeout: 30 * time.Second}
	post := func(path, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), "POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	var receipt string
	t.Run("chat", func(t *testing.T) {
		resp, body := post("/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"user","content":"hello there"}],"max_tokens":6}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		var c struct {
			Choices []struct{ Message struct{ Content string } }
			Usage   struct{ PromptTokens, CompletionTokens, TotalTokens int } `json:"usage"`
		}
		if err := json.Unmarshal([]byte(body), &c); err != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content == "" {
			t.Fatalf("body %s (%v)", body, err)
		}
		receipt = resp.Header.Get("X-Tollgate-Receipt")
		if !strings.HasPrefix(receipt, "rcpt_") {
			t.Errorf("no receipt header")
		}
	})
	t.Run("streaming chat with usage", func(t *testing.T) {
		resp, body := post("/v1/chat/completions", `{"model":"sim-tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`)
		if resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || !strings.Contains(body, `"usage":{"prompt_tokens"`) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("completions and embeddings", func(t *testing.T) {
		if resp, body := post("/v1/completions", `{"model":"sim-tiny","prompt":"once","max_tokens":3}`); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if resp, body := post("/v1/embeddings", `{"model":"sim-tiny","input":["a","b"]}`); resp.StatusCode != 200 || strings.Count(body, `"object":"embedding"`) != 2 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("error through both", func(t *testing.T) {
		resp, body := post("/v1/chat/completions", `{"model":"unknown","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 404 || !strings.Contains(body, `"code":"model_not_found"`) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("admin lists the worker", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/v1/workers", nil)
		req.Header.Set("Authorization", "Bearer sk-e2e-admin")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"worker_id":"0x`) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})

	// The gateway's in-process prover batches the receipts, the worker
	// countersigns over HTTP, and the receipt verifies offline.
	t.Run("receipt proven and verified", func(t *testing.T) {
		if receipt == "" {
			t.Skip("no receipt from the chat step")
		}
		gw.waitFor(t, "batch proven")
		req, _ := http.NewRequest("GET", base+"/v1/receipts/"+receipt, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"proven"`) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		file := filepath.Join(t.TempDir(), "receipt.json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "verify", "-gateway", base, "--allow-dev-keys", file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 OK, 0 failed") {
			t.Fatalf("tollgate verify: %v\n%s", err, out)
		}
	})

	// A worker that stops deregisters; then the gateway has no capable worker.
	wk.stop(t)
	gw.waitFor(t, "worker deregistered")
	if resp, body := post("/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 404 && resp.StatusCode != 503 {
		t.Errorf("after the worker left: %d %s", resp.StatusCode, body)
	}
	gw.stop(t)
}
