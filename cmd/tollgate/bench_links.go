package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/overhead"
	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

func init() {
	register(benchCommands, "links", "one gateway holding many outbound worker links (TLS + yamux): its RSS and CPU idle and under load", runBenchLinks)
}

// linksResult is what `tollgate bench links` measured.
type linksResult struct {
	Workers      int     `json:"workers"`
	RegisteredIn float64 `json:"all_registered_s"`
	// Idle: the links up, workers heartbeating, no requests.
	IdleSeconds  float64 `json:"idle_s"`
	IdleCPUCores float64 `json:"idle_cpu_cores"`
	IdleRSSMiB   float64 `json:"idle_rss_mib"`
	IdleFDs      int     `json:"idle_fds"`
	// Load: requests through the gateway, spread over the workers by the
	// scheduler.
	Rate          float64         `json:"rate_rps"`
	Load          *loadgen.Result `json:"load,omitempty"`
	LoadCPUCores  float64         `json:"load_cpu_cores"`
	CPUPerRequest float64         `json:"gateway_cpu_us_per_request"`
	LoadRSSMiB    float64         `json:"load_rss_mib"`
	PeakRSSMiB    float64         `json:"peak_rss_mib"`
	WorkersServed int             `json:"workers_that_served"`
}

// runBenchLinks starts `tollgate gateway` as a child process with its
// worker link on TLS, then N simulator workers in this process, each on its
// own outbound link (its own key, TLS connection and yamux session, its
// registration and heartbeats over the link, as `tollgate worker
// --gateway-link` runs them), and reads the gateway's CPU and RSS from
// /proc: idle with every link up, then under load.
func runBenchLinks(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate bench links", flag.ContinueOnError)
	n := fs.Int("workers", 200, "simulated workers, each on its own outbound link")
	idle := fs.Duration("idle", 15*time.Second, "how long to sample the gateway with every link up and no requests")
	rate := fs.Float64("rate", 200, "requests/s through the gateway in the load phase (0: no load phase)")
	duration := fs.Duration("duration", 15*time.Second, "length of the load phase")
	timeScale := fs.Float64("time-scale", 0.01, "the simulator workers' time scale (0.01: 100x faster than the profile)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	gwLogPath := fs.String("gateway-log", "", "write the gateway's log here (default: a temporary file, shown only on failure)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	case *n < 1 || *n > 1024:
		return fmt.Errorf("-workers: %d is outside [1, 1024] (the link's default session limit)", *n)
	case *idle <= 0 || *duration <= 0 || *rate < 0 || *timeScale <= 0:
		return errors.New("-idle, -duration and -time-scale must be positive, -rate not negative")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tollgate-bench-links-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := overhead.WriteLinkCertificate(dir)
	if err != nil {
		return err
	}
	apiAddr, linkAddr, err := freeAddrs()
	if err != nil {
		return err
	}
	apiKey, adminKey, providerToken := benchSecret("tg-"), benchSecret("tg-admin-"), benchSecret("tgp-")
	gw := exec.CommandContext(ctx, exe, "gateway", "--listen", apiAddr, "--worker-listen", linkAddr,
		"--tls-cert", certFile, "--tls-key", keyFile, "--data", filepath.Join(dir, "gateway"),
		"--api-key", apiKey, "--admin-key", adminKey, "--provider-token", providerToken,
		"--open-registration", "--no-prover")
	if *gwLogPath == "" {
		*gwLogPath = filepath.Join(dir, "gateway.log")
	}
	gwLog, err := os.Create(*gwLogPath)
	if err != nil {
		return err
	}
	defer gwLog.Close()
	gw.Stdout, gw.Stderr = gwLog, gwLog
	if err := gw.Start(); err != nil {
		return err
	}
	defer func() {
		_ = gw.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = gw.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = gw.Process.Kill()
			<-done
		}
	}()
	base := "https://" + apiAddr + "/v1"
	client := &http.Client{Timeout: 5 * time.Second}
	clientTLS, err := workerlink.ClientTLS(certFile, "", "", nil)
	if err != nil {
		return err
	}
	client.Transport = &http.Transport{TLSClientConfig: clientTLS, MaxIdleConnsPerHost: 1024}
	if err := benchWait(ctx, 30*time.Second, func() error { return getJSON(client, base+"/models", apiKey, nil) }); err != nil {
		return fmt.Errorf("the gateway did not come up: %w\n%s", err, logTail(*gwLogPath))
	}

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWorkers(); wg.Wait() }()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	start := time.Now()
	for i := range *n {
		if err := startLinkWorker(wctx, &wg, i, linkAddr, certFile, providerToken, *timeScale, logger); err != nil {
			return err
		}
	}
	res := &linksResult{Workers: *n, Rate: *rate}
	var list struct {
		Data []struct {
			URL    string `json:"url"`
			Served int64  `json:"served"`
		} `json:"data"`
	}
	countLinked := func() (int, error) {
		if err := getJSON(client, base+"/workers", adminKey, &list); err != nil {
			return 0, err
		}
		ws := list.Data
		linked := 0
		for _, w := range ws {
			if strings.HasPrefix(w.URL, workers.LinkScheme+"://") {
				linked++
			}
		}
		return linked, nil
	}
	if err := benchWait(ctx, 2*time.Minute, func() error {
		if got, err := countLinked(); err != nil || got < *n {
			return fmt.Errorf("%d of %d workers registered over their links (%v)", got, *n, err)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("%w\n%s", err, logTail(*gwLogPath))
	}
	res.RegisteredIn = time.Since(start).Seconds()

	pid := gw.Process.Pid
	cpu0, err := overhead.ProcessCPU(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-time.After(*idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := overhead.ProcessCPU(pid)
	if err != nil {
		return err
	}
	res.IdleSeconds = time.Since(t0).Seconds()
	res.IdleCPUCores = (cpu1 - cpu0).Seconds() / res.IdleSeconds
	res.IdleRSSMiB = overhead.ProcessRSSMiB(pid)
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		res.IdleFDs = len(fds)
	}

	if *rate > 0 {
		body := `{"model":"` + sim.Profiles()[sim.DefaultProfile].Model + `","messages":[{"role":"user","content":"hello"}],"max_tokens":16}`
		t1 := time.Now()
		res.Load, err = loadgen.Run(ctx, loadgen.Config{
			URL: base + "/chat/completions", Body: []byte(body), Rate: *rate, Duration: *duration,
			Header: map[string]string{"Authorization": "Bearer " + apiKey, "Content-Type": "application/json"},
			TLS:    clientTLS,
		})
		if err != nil {
			return err
		}
		cpu2, err := overhead.ProcessCPU(pid)
		if err != nil {
			return err
		}
		secs := time.Since(t1).Seconds()
		res.LoadCPUCores = (cpu2 - cpu1).Seconds() / secs
		res.LoadRSSMiB = overhead.ProcessRSSMiB(pid)
		if res.Load.OK > 0 {
			// Idle work (heartbeats) is taken off, so this is the
			// requests' own cost.
			res.CPUPerRequest = (res.LoadCPUCores - res.IdleCPUCores) * secs / float64(res.Load.OK) * 1e6
		}
		if _, err := countLinked(); err == nil {
			for _, w := range list.Data {
				if w.Served > 0 {
					res.WorkersServed++
				}
			}
		}
	}
	res.PeakRSSMiB = overhead.ProcessPeakRSSMiB(pid)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Printf("One gateway (`tollgate gateway`, receipts on, prover apart), %d simulator workers each on its own outbound link (TLS 1.3 + yamux), all registered in %.1f s.\n\n", res.Workers, res.RegisteredIn)
	fmt.Printf("| phase | gateway CPU (cores) | RSS (MiB) | other |\n|---|---|---|---|\n")
	fmt.Printf("| idle, %d links up, heartbeats only (%.0f s) | %.3f | %.1f | %d open fds |\n", res.Workers, res.IdleSeconds, res.IdleCPUCores, res.IdleRSSMiB, res.IdleFDs)
	if res.Load != nil {
		fmt.Printf("| %.0f req/s for %s | %.3f | %.1f | %d ok, %d errors, p50 %.2f ms, p99 %.2f ms; %.0f µs CPU per request; %d workers served |\n",
			res.Rate, *duration, res.LoadCPUCores, res.LoadRSSMiB, res.Load.OK, res.Load.Errored(), res.Load.Latency.P50, res.Load.Latency.P99, res.CPUPerRequest, res.WorkersServed)
	}
	fmt.Printf("\nPeak RSS %.1f MiB.\n", res.PeakRSSMiB)
	return nil
}

// startLinkWorker runs one simulator worker on its own outbound link, as
// `tollgate worker --gateway-link --gateway-ca` does, until ctx ends.
func startLinkWorker(ctx context.Context, wg *sync.WaitGroup, i int, linkAddr, caFile, providerToken string, timeScale float64, logger *slog.Logger) error {
	key, err := keys.Generate(rand.Reader)
	if err != nil {
		return err
	}
	eng, _, err := openEngine(engineFlags{kind: "sim", profile: sim.DefaultProfile, timeScale: timeScale}, logger)
	if err != nil {
		return err
	}
	wl := workerLinkFlags{addr: linkAddr, gatewayCA: caFile}
	d, err := wl.dialer(logger)
	if err != nil {
		return err
	}
	node := workerNode{
		gatewayURL: "http://gateway-link", advertise: workers.LinkOutbound, providerToken: providerToken, key: key,
		engine: eng, logger: logger.With("bench_worker", i),
		httpClient: &http.Client{Transport: linkTransport(d), Timeout: 10 * time.Second},
	}
	linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(2)
	go func() { defer wg.Done(); runLink(linkCtx, d, logger) }()
	go func() {
		defer wg.Done()
		defer stopLink()
		if err := runWorkerNode(ctx, d, node); err != nil && !errors.Is(err, context.Canceled) {
			logger.Error("bench worker stopped", "worker", i, "err", err)
		}
	}()
	return nil
}

// freeAddrs picks two free 127.0.0.1 ports (the gateway's API and worker
// link).
func freeAddrs() (string, string, error) {
	var addrs [2]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", err
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	return addrs[0], addrs[1], nil
}

func benchSecret(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// getJSON GETs url with a bearer key and decodes a 200's JSON into out (nil:
// discarded).
func getJSON(c *http.Client, url, key string, out any) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// benchWait retries f every 100 ms until it succeeds or d passes.
func benchWait(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logTail is the last 4 KiB of a log file, for an error message.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}
