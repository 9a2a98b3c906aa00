// Package netns tests the outbound worker link on a real network shape: a
// worker in its own network namespace behind a NAT (veth + iptables
// MASQUERADE) that the gateway cannot dial. It needs root and `ip netns`;
// elsewhere it skips.
package netns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	apiKey        = "sk-netns-0123456789"
	providerToken = "pt-netns-0123456789"
)

func run(t *testing.T, args ...string) error {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// natNamespace puts a namespace behind a NAT: veth pair, 10.P.0.1 on the
// host side, 10.P.0.2 inside, MASQUERADE out of the host side. It returns
// the namespace and the host-side device.
func natNamespace(t *testing.T) (ns, hostDev, nsDev string) {
	if os.Geteuid() != 0 {
		t.Skip("netns: needs root (ip netns, veth, iptables)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("netns: iptables is not installed (apt-get install iptables)")
	}
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	ns, hostDev, nsDev = "tgw"+id, "tgh"+id, "tgn"+id
	if err := run(t, "ip", "netns", "add", ns); err != nil {
		t.Skipf("netns: ip netns add failed (%v)", err)
	}
	subnet := fmt.Sprintf("10.%d.%d", 100+int(b[0])%100, b[1])
	t.Cleanup(func() {
		exec.Command("iptables", "-t", "nat", "-D", "POSTROUTING", "-s", subnet+".0/24", "-j", "MASQUERADE").Run()
		exec.Command("ip", "link", "del", hostDev).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, c := range [][]string{
		{"ip", "link", "add", hostDev, "type", "veth", "peer", "name", nsDev},
		{"ip", "link", "set", nsDev, "netns", ns},
		{"ip", "addr", "add", subnet + ".1/24", "dev", hostDev},
		{"ip", "link", "set", hostDev, "up"},
		{"ip", "netns", "exec", ns, "ip", "addr", "add", subnet + ".2/24", "dev", nsDev},
		{"ip", "netns", "exec", ns, "ip", "link", "set", nsDev, "up"},
		{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", subnet + ".1"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", subnet + ".0/24", "-j", "MASQUERADE"},
		// Like a home router: nothing from outside may open a connection in.
		{"ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-i", nsDev, "-j", "DROP"},
	} {
		if err := run(t, c...); err != nil {
			t.Fatal(err)
		}
	}
	return ns, hostDev, nsDev
}

// start runs a process, logging its output into the test's log file.
func start(t *testing.T, logPath string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s:\n%s", filepath.Base(logPath), b)
		}
	})
	return cmd
}

// chat sends one request; stream reads the SSE body to [DONE].
func chat(stream bool) error {
	body := fmt.Sprintf(`{"model":"llama3-8b","stream":%v,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`, stream)
	req, _ := http.NewRequest("POST", "http://127.0.0.1:18680/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if !stream {
		_, err := io.ReadAll(resp.Body)
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: [DONE]" {
			return nil
		}
	}
	return fmt.Errorf("stream ended without [DONE]: %v", sc.Err())
}

// until retries f until it succeeds or d passes, returning how long it took.
func until(t *testing.T, d time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	t0 := time.Now()
	var err error
	for time.Since(t0) < d {
		if err = f(); err == nil {
			return time.Since(t0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
	return 0
}

func TestWorkerBehindNAT(t *testing.T) {
	ns, hostDev, nsDev := natNamespace(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", bin, "github.com/tollgate-ai/tollgate/cmd/tollgate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The gateway listens on the host side of the veth only for the link;
	// the worker has no address the gateway could route to.
	hostIP := strings.Split(mustAddr(t, hostDev), "/")[0]
	gateway := func(log string) *exec.Cmd {
		return start(t, filepath.Join(dir, log), bin, "gateway", "--listen", "127.0.0.1:18680", "--worker-listen", hostIP+":18643",
			"--worker-link-insecure", "--data", filepath.Join(dir, "gw"), "--api-key", apiKey, "--provider-token", providerToken,
			"--open-registration", "--no-receipts", "--log-format", "text")
	}
	gw := gateway("gateway.log")
	start(t, filepath.Join(dir, "worker.log"), "ip", "netns", "exec", ns, bin, "worker", "--gateway-link", hostIP+":18643",
		"--gateway-link-insecure", "--provider-token", providerToken, "--engine", "sim", "--time-scale", "0.01",
		"--data", filepath.Join(dir, "worker"), "--log-format", "text")

	until(t, 20*time.Second, "unary request through the NAT", func() error { return chat(false) })
	nsIP := strings.Split(mustAddrIn(t, ns, nsDev), "/")[0]
	// A connection in is dropped unanswered (not even refused).
	c, err := net.DialTimeout("tcp", nsIP+":9090", time.Second)
	if err == nil {
		c.Close()
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dialling into the worker's namespace: %v, want a timeout (the NAT drops it)", err)
	}
	if err := chat(true); err != nil {
		t.Fatalf("streamed request: %v", err)
	}

	// The NAT's link goes down, then up again.
	if err := run(t, "ip", "link", "set", hostDev, "down"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second) // past keepalive + write timeout: the session is dead on both sides
	if err := run(t, "ip", "link", "set", hostDev, "up"); err != nil {
		t.Fatal(err)
	}
	took := until(t, 10*time.Second, "request after the link came back", func() error { return chat(false) })
	t.Logf("served again %v after the link came back", took)
	if b, _ := os.ReadFile(filepath.Join(dir, "gateway.log")); strings.Count(string(b), "worker link up") < 2 {
		t.Errorf("the worker did not dial in again:\n%s", b)
	}

	// The gateway restarts.
	gw.Process.Kill()
	gw.Wait()
	gateway("gateway2.log")
	took = until(t, 10*time.Second, "request after a gateway restart", func() error { return chat(true) })
	t.Logf("served again %v after the gateway restarted", took)
}

func mustAddr(t *testing.T, dev string) string {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show", "dev", dev).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no address on %s: %s", dev, out)
	return ""
}

func mustAddrIn(t *testing.T, ns, dev string) string {
	out, err := exec.Command("ip", "netns", "exec", ns, "ip", "-o", "-4", "addr", "show", "dev", dev).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no address on %s in %s: %s", dev, ns, out)
	return ""
}
