// Package soak holds acceptance runs against real `tollgate` processes
// that kill them under load: TestBillingUnderChaos (part of `make test`)
// and the long backlog soak, TestSoakBacklog, skipped unless TOLLGATE_SOAK
// is set (scripts/soak-backlog.sh).
package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/zk"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// proc is one tollgate process.
type proc struct {
	t    *testing.T
	name string
	bin  string
	args []string
	log  *os.File
	cmd  *exec.Cmd
	done chan error
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	fmt.Fprintf(p.log, "\n=== soak: started %s (pid %d)\n", p.name, p.cmd.Process.Pid)
}

// stop sends sig and waits for the process to end (SIGKILL after 90 s).
func (p *proc) stop(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	fmt.Fprintf(p.log, "\n=== soak: %s to %s\n", sig, p.name)
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// tollgateBinary returns $TOLLGATE_BIN, or builds the command into dir.
func tollgateBinary(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("TOLLGATE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", bin, "./cmd/tollgate")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// waitHTTP waits until GET url answers 200 (a process under test is up).
func waitHTTP(t *testing.T, client *http.Client, url string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not 200 after %s", url, d)
}

// openLedger opens the ledger the processes under test share in r.
func openLedger(t *testing.T, r *redistest.Redis, keyDir string) *ledger.Ledger {
	t.Helper()
	st, err := ledger.OpenRedis(context.Background(), r.URL, ledger.RedisOptions{Prefix: r.Prefix + "ledger:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return ledger.New(st, ledger.Options{KeyDir: keyDir})
}

func startAll(ps []*proc) {
	for _, p := range ps {
		p.start()
	}
}

func stopAll(ps []*proc) {
	for _, p := range ps {
		p.stop(syscall.SIGTERM)
	}
}

// exportAll reads the ledger's whole export, in ledger order.
func exportAll(t *testing.T, ctx context.Context, l *ledger.Ledger) []*receipts.Receipt {
	t.Helper()
	var out []*receipts.Receipt
	for after := ""; ; {
		page, next, err := l.Export(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page {
			rc := new(receipts.Receipt)
			if err := json.Unmarshal(raw, rc); err != nil {
				t.Fatal(err)
			}
			out = append(out, rc)
		}
		if next == "" {
			return out
		}
		after = next
	}
}

// verifier checks proven receipts against the ledger's current registry
// root, fetching each verifying key once.
type verifier struct {
	t   *testing.T
	ctx context.Context
	l   *ledger.Ledger
	reg *receipts.AdmissionTree
	vks map[string]*receipts.VerifyingKey
}

func newVerifier(t *testing.T, ctx context.Context, l *ledger.Ledger) *verifier {
	t.Helper()
	reg, err := l.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &verifier{t: t, ctx: ctx, l: l, reg: reg, vks: map[string]*receipts.VerifyingKey{}}
}

func (v *verifier) verify(rc *receipts.Receipt) error {
	vk := v.vks[rc.Batch.VerifyingKeyID]
	if vk == nil {
		b, err := v.l.VerifyingKey(v.ctx, rc.Batch.VerifyingKeyID)
		if err != nil {
			v.t.Fatal(err)
		}
		if vk, err = receipts.ParseVerifyingKey(b); err != nil {
			v.t.Fatal(err)
		}
		v.vks[rc.Batch.VerifyingKeyID] = vk
	}
	return receipts.Verify(rc, vk, v.reg.Root())
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestSoakBacklog acknowledges TOLLGATE_SOAK_N receipts (default 50,000)
// through a Redis-mode gateway, one simulator worker and two provers, all
// real processes, and kills each of them (SIGTERM and kill -9) while the
// backlog is being recorded and while it is being proven. It then waits
// until every receipt is proven and checks: none failed, every
// acknowledged receipt is proven and verifies, no request has two records.
func TestSoakBacklog(t *testing.T) {
	if os.Getenv("TOLLGATE_SOAK") == "" {
		t.Skip("set TOLLGATE_SOAK=1 (scripts/soak-backlog.sh) to run the backlog soak")
	}
	n := envInt("TOLLGATE_SOAK_N", 50_000)
	conc := envInt("TOLLGATE_SOAK_CONCURRENCY", 64)
	proveTimeout := envDuration("TOLLGATE_SOAK_PROVE_TIMEOUT", 6*time.Hour)
	root := t.TempDir()
	if d := os.Getenv("TOLLGATE_SOAK_DIR"); d != "" {
		root = d
		os.MkdirAll(root, 0o755)
	}
	bin := tollgateBinary(t, root)
	keyDir := os.Getenv("TOLLGATE_SOAK_KEYS")
	if keyDir == "" {
		keyDir = zk.TestKeyDir()
		if err := zk.EnsureDevKeys(keyDir, 8); err != nil {
			t.Fatal(err)
		}
	}
	r := redistest.New(t)
	logs, err := os.Create(filepath.Join(root, "processes.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	t.Logf("soak: %d receipts, concurrency %d, keys %s, logs %s", n, conc, keyDir, logs.Name())

	const apiKey, providerToken = "sk-soak-0123456789", "pt-soak-0123456789abcdef"
	gwAddr, wAddr := freePort(t), freePort(t)
	cfg := fmt.Sprintf("listen: %q\ndata_dir: %q\napi_keys: [{id: soak, key: %q}]\nprovider_tokens: [%q]\nopen_registration: true\nlog: {level: warn}\nredis: {url: %q, prefix: %q, claim_idle: 20s}\n",
		gwAddr, filepath.Join(root, "gateway"), apiKey, providerToken, r.URL, r.Prefix)
	cfgPath := filepath.Join(root, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := &proc{t: t, name: "gateway", bin: bin, log: logs, args: []string{"gateway", "--config", cfgPath, "--no-prover", "--log-format", "text"}}
	worker := &proc{t: t, name: "worker", bin: bin, log: logs, args: []string{"worker", "--engine", "sim", "--profile", "sim-tiny", "--time-scale", "0.01",
		"--gateway", "http://" + gwAddr, "--listen", wAddr, "--data", filepath.Join(root, "worker"), "--provider-token", providerToken,
		"--max-concurrency", "256", "--log-level", "warn", "--log-format", "text"}}
	provers := []*proc{}
	for _, name := range []string{"p1", "p2"} {
		provers = append(provers, &proc{t: t, name: name, bin: bin, log: logs, args: []string{"prover", "--redis", r.URL, "--redis-prefix", r.Prefix,
			"--keys", keyDir, "--allow-dev-keys", "--name", name, "--claim-idle", "20s", "--max-age", "1s"}})
	}
	all := append([]*proc{gw, worker}, provers...)
	startAll(all)
	defer stopAll(all)

	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	base := "http://" + gwAddr
	waitReady := func() { waitHTTP(t, client, base+"/readyz", 2*time.Minute) }
	waitReady()

	l := openLedger(t, r, keyDir)
	counts := func() ledger.Counts {
		c, err := l.Counts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Load: keep sending until n receipts are acknowledged (a 200 carrying
	// X-Tollgate-Receipt); requests refused while a process is down are
	// not acknowledged and not billable.
	var (
		mu     sync.Mutex
		acked  = map[string]bool{}
		sent   atomic.Int64
		failed atomic.Int64
	)
	ackedN := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	loadDone := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ackedN() < n {
				i := sent.Add(1)
				body := fmt.Sprintf(`{"model":"sim-tiny","max_tokens":8,"messages":[{"role":"user","content":"soak %d"}]}`, i)
				req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+apiKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				id := resp.Header.Get("X-Tollgate-Receipt")
				if resp.StatusCode != 200 || id == "" {
					failed.Add(1)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				mu.Lock()
				if len(acked) < n {
					acked[id] = true
				}
				mu.Unlock()
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()

	// Chaos while the backlog is recorded, at fractions of n.
	var events []string
	event := func(format string, args ...any) {
		e := fmt.Sprintf("%6.0fs acked=%d counts=%+v: ", time.Since(start).Seconds(), ackedN(), counts()) + fmt.Sprintf(format, args...)
		events = append(events, e)
		t.Log(e)
	}
	chaos := []struct {
		at   float64
		what string
		do   func()
	}{
		{0.15, "kill -9 worker, restart", func() { worker.stop(syscall.SIGKILL); worker.start() }},
		{0.30, "kill -9 prover p1, restart", func() { provers[0].stop(syscall.SIGKILL); provers[0].start() }},
		{0.45, "SIGTERM gateway, restart", func() { gw.stop(syscall.SIGTERM); gw.start(); waitReady() }},
		{0.60, "SIGTERM prover p2, restart", func() { provers[1].stop(syscall.SIGTERM); provers[1].start() }},
		{0.75, "kill -9 gateway, restart", func() { gw.stop(syscall.SIGKILL); gw.start(); waitReady() }},
		{0.90, "SIGTERM worker, restart", func() { worker.stop(syscall.SIGTERM); worker.start() }},
	}
	for _, c := range chaos {
		for ackedN() < int(c.at*float64(n)) {
			select {
			case <-loadDone:
			case <-time.After(100 * time.Millisecond):
			}
		}
		event("%s", c.what)
		c.do()
	}
	<-loadDone
	loadTime := time.Since(start)
	event("load done: %d acknowledged of %d sent (%d refused or failed while processes restarted) in %s", ackedN(), sent.Load(), failed.Load(), loadTime.Round(time.Second))

	// Chaos while the backlog is proven: every few minutes one of the
	// provers or the worker dies, the gateway is restarted.
	kills := []struct {
		what string
		do   func()
	}{
		{"kill -9 prover p1 and the worker, restart", func() {
			provers[0].stop(syscall.SIGKILL)
			worker.stop(syscall.SIGKILL)
			time.Sleep(2 * time.Second)
			worker.start()
			provers[0].start()
		}},
		{"SIGTERM prover p2, kill -9 gateway, restart", func() {
			provers[1].stop(syscall.SIGTERM)
			gw.stop(syscall.SIGKILL)
			gw.start()
			waitReady()
			provers[1].start()
		}},
		{"kill -9 both provers, restart", func() {
			provers[0].stop(syscall.SIGKILL)
			provers[1].stop(syscall.SIGKILL)
			provers[0].start()
			provers[1].start()
		}},
	}
	every := envDuration("TOLLGATE_SOAK_KILL_EVERY", 4*time.Minute)
	proveStart := time.Now()
	next := time.Now().Add(every)
	for k := 0; ; {
		c := counts()
		if c.Failed > 0 {
			t.Errorf("%d receipts failed", c.Failed)
			break
		}
		if c.Pending == 0 && c.Proven >= int64(ackedN()) {
			break
		}
		if time.Since(proveStart) > proveTimeout {
			t.Errorf("not every receipt proven after %s: %+v", proveTimeout, c)
			break
		}
		if k < len(kills) && time.Now().After(next) {
			event("%s", kills[k].what)
			kills[k].do()
			k++
			next = time.Now().Add(every)
		}
		time.Sleep(2 * time.Second)
	}
	event("proving done in %s", time.Since(proveStart).Round(time.Second))

	// Every acknowledged receipt proven and verifying; no request twice.
	ctx := context.Background()
	v := newVerifier(t, ctx, l)
	seenReq := map[string]string{}
	batches := map[uint64]bool{}
	recorded, proven, verified := 0, 0, 0
	for _, rc := range exportAll(t, ctx, l) {
		recorded++
		if prev, dup := seenReq[rc.RequestID]; dup {
			t.Errorf("request %s has two records: %s and %s", rc.RequestID, prev, rc.ID)
		}
		seenReq[rc.RequestID] = rc.ID
		if rc.Status != receipts.StatusProven {
			if acked[rc.ID] {
				t.Errorf("acknowledged receipt %s is %s %q", rc.ID, rc.Status, rc.Error)
			}
			continue
		}
		proven++
		batches[rc.Batch.Public.Sequence] = true
		if err := v.verify(rc); err != nil {
			t.Errorf("%s does not verify: %v", rc.ID, err)
		} else {
			verified++
		}
	}
	missing := 0
	for id := range acked {
		if _, err := l.Receipt(ctx, id); err != nil {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged receipts are not in the ledger", missing)
	}
	summary := map[string]any{"acknowledged": ackedN(), "sent": sent.Load(), "refused_or_failed_requests": failed.Load(),
		"recorded": recorded, "proven": proven, "verified": verified, "batches": len(batches), "final_counts": counts(),
		"load_seconds": loadTime.Seconds(), "proving_seconds": time.Since(proveStart).Seconds(), "events": events}
	out, _ := json.MarshalIndent(summary, "", "  ")
	os.WriteFile(filepath.Join(root, "summary.json"), out, 0o644)
	t.Logf("summary:\n%s", out)
}
