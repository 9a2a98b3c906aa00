package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/soak"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/zk"
)

func init() {
	register(benchCommands, "soak", "steady mixed load on a dev stack with receipts on; RSS, goroutines and fds must stay flat after warm-up (JSON report)", runBenchSoak)
}

// soakConfig is one soak run.
type soakConfig struct {
	Duration time.Duration `json:"duration_ns"`
	Rate     float64       `json:"rate_rps"`
	Sample   time.Duration `json:"sample_ns"`
	Limits   soak.Limits   `json:"limits"`
	// Prover proves receipts in the process, as `tollgate dev` does (keys
	// from zk.TestKeyDir, set up once). Off, receipts are recorded and stay
	// pending, as with a prover in its own process.
	Prover bool `json:"prover"`
	// ProverKeys are the key capacities cached when the load started
	// (Prover); the others are set up in the background during the run, as
	// `tollgate dev` does on its first start.
	ProverKeys []int `json:"prover_keys_at_start,omitempty"`
	// proverExe is keyPolicy.exe (set from the command line: proofs and
	// key set-up in low-priority children, as in `tollgate dev`); tests
	// leave it empty and prove in process.
	proverExe string
	// RedisURL puts the stack's registry, ledger and proving queue in this
	// Redis, under RedisPrefix: a fresh prefix per run, deleted after.
	RedisURL    string `json:"redis_url,omitempty"`
	RedisPrefix string `json:"redis_prefix,omitempty"`
	// ProverProcess proves in a child `tollgate prover --redis` process
	// (needs RedisURL: the embedded ledger is single-process), with the
	// cached development keys of ProverCapacities. The child is sampled
	// like this process and stopped when the load ends.
	ProverProcess    bool   `json:"prover_process"`
	ProverCapacities []int  `json:"prover_capacities,omitempty"`
	DataDir          string `json:"-"`
	// proverCommand builds the child's command from its arguments (default:
	// this executable); tests run their own binary as tollgate.
	proverCommand func(args []string) *exec.Cmd
	// HeapProfile, when set, gets a heap profile written as the load ends
	// (before the stack stops): what is still held after the run.
	HeapProfile string `json:"-"`
	logger      *slog.Logger
}

// soakReport is the JSON a soak run prints.
type soakReport struct {
	Config   soakConfig                 `json:"config"`
	Pass     bool                       `json:"pass"`
	Failures []string                   `json:"failures,omitempty"`
	Load     map[string]*loadgen.Result `json:"load"`
	Growth   []soak.Growth              `json:"growth"`
	Receipts ledger.Counts              `json:"receipts"`
	// OldestPending is the proving backlog's age when the load stopped.
	OldestPending time.Duration `json:"oldest_pending_ns"`
	// ProvingRate is receipts proven per second after warm-up.
	ProvingRate    float64         `json:"proving_rate_per_s"`
	Samples        []soak.Sample   `json:"samples"`
	ReceiptSamples []receiptSample `json:"receipt_samples,omitempty"`
	Prover         *proverReport   `json:"prover_process,omitempty"`
}

// receiptSample is the ledger's counts at one point of the run.
type receiptSample struct {
	At time.Duration `json:"at_ns"`
	ledger.Counts
}

// proverReport is the child prover process's part of the report. Its RSS
// growth is reported, not judged: the verdict is the gateway's.
type proverReport struct {
	PID     int           `json:"pid"`
	Log     string        `json:"log"`
	Growth  []soak.Growth `json:"growth"`
	Samples []soak.Sample `json:"samples"`
	// Exit is how it ended once stopped ("" for a clean exit).
	Exit string `json:"exit,omitempty"`
}

func runBenchSoak(ctx context.Context, args []string) error {
	cfg := soakConfig{Duration: 30 * time.Minute, Rate: 200, Sample: 5 * time.Second,
		Limits: soak.Limits{RSS: 0.10, Goroutines: 0.10, FDs: 0.10, Slack: 64}}
	fs := flag.NewFlagSet("tollgate bench soak", flag.ContinueOnError)
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the load runs")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "requests per second: half chat, a quarter streamed chat, a quarter embeddings")
	fs.DurationVar(&cfg.Sample, "sample", cfg.Sample, "how often RSS, goroutines and fds are sampled")
	fs.DurationVar(&cfg.Limits.Warmup, "warmup", 0, "growth is judged after this (default: 5m, or a quarter of -duration if shorter)")
	fs.Float64Var(&cfg.Limits.RSS, "max-rss-growth", cfg.Limits.RSS, "largest RSS growth after warm-up (fraction)")
	fs.Float64Var(&cfg.Limits.Goroutines, "max-goroutine-growth", cfg.Limits.Goroutines, "largest goroutine growth after warm-up (fraction, plus -slack)")
	fs.Float64Var(&cfg.Limits.FDs, "max-fd-growth", cfg.Limits.FDs, "largest fd growth after warm-up (fraction, plus -slack)")
	fs.IntVar(&cfg.Limits.Slack, "slack", cfg.Limits.Slack, "goroutines and fds allowed above the growth fraction (they follow the requests in flight)")
	fs.BoolVar(&cfg.Prover, "prover", false, "prove receipts as `tollgate dev` does: the in-process prover proving in a child at the lowest CPU priority, larger keys set up in the background (cached in "+zk.TestKeyDir()+") (default: receipts stay pending, as with `tollgate prover` in its own process)")
	proverInProcess := fs.Bool("prover-in-process", false, "with -prover: prove inside this process at normal priority (as `tollgate dev --prover-in-process`)")
	fs.StringVar(&cfg.RedisURL, "redis", "", "keep the stack's worker registry, receipt ledger and proving queue in this Redis (redis://host:port/db), under a fresh key prefix deleted after")
	fs.BoolVar(&cfg.ProverProcess, "prover-process", false, "prove in a child `tollgate prover --redis` process with cached development keys, sampled like this one (needs -redis)")
	capacities := fs.String("prover-capacities", "8,64", "development key capacities the child prover proves with (set up once, cached in "+zk.TestKeyDir()+")")
	fs.StringVar(&cfg.HeapProfile, "heapprofile", "", "write a heap profile here when the load ends (go tool pprof -sample_index=inuse_space)")
	fs.StringVar(&cfg.DataDir, "data", "", "data directory (default: a temporary one, removed after)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Limits.Warmup == 0 {
		cfg.Limits.Warmup = min(5*time.Minute, cfg.Duration/4)
	}
	var err error
	if cfg.Prover {
		if cfg.proverExe, err = proverExecutable(*proverInProcess); err != nil {
			return err
		}
	}
	if cfg.ProverCapacities, err = parseCapacities(*capacities); err != nil {
		return fmt.Errorf("-prover-capacities: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	applyGCDefault(slog.Default())
	cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := runSoak(ctx, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	for _, g := range rep.Growth {
		fmt.Fprintf(os.Stderr, "soak: %-10s first %.0f last %.0f growth %+.1f%% (limit %.0f%%)\n", g.Series, g.First, g.Last, 100*g.Growth, 100*g.Limit)
	}
	if p := rep.Prover; p != nil {
		for _, g := range p.Growth {
			fmt.Fprintf(os.Stderr, "soak: prover %-10s first %.0f last %.0f growth %+.1f%% (reported, not judged)\n", g.Series, g.First, g.Last, 100*g.Growth)
		}
		if n := len(p.Samples); n > 0 {
			fmt.Fprintf(os.Stderr, "soak: prover pid %d peak RSS %d MiB, log %s\n", p.PID, p.Samples[n-1].PeakRSSBytes>>20, p.Log)
		}
	}
	fmt.Fprintf(os.Stderr, "soak: receipts %+v, %.1f proven/s after warm-up, oldest unproven %s old\n", rep.Receipts, rep.ProvingRate, rep.OldestPending.Round(time.Second))
	if !rep.Pass {
		return fmt.Errorf("soak failed: %v", rep.Failures)
	}
	fmt.Fprintln(os.Stderr, "soak: pass")
	return nil
}

// validate checks the run's settings before anything starts.
func (c *soakConfig) validate() error {
	switch {
	case c.Rate <= 0 || c.Duration <= 0 || c.Sample <= 0:
		return errors.New("soak: -rate, -duration and -sample must be positive")
	case c.ProverProcess && c.RedisURL == "":
		return errors.New("soak: -prover-process needs -redis: a prover in its own process shares the ledger through Redis (the embedded ledger is single-process)")
	case c.ProverProcess && c.Prover:
		return errors.New("soak: -prover and -prover-process: choose one (in this process, or in a child)")
	case c.ProverProcess && len(c.ProverCapacities) == 0:
		return errors.New("soak: -prover-process needs at least one key capacity")
	}
	for _, n := range c.ProverCapacities {
		if !slices.Contains(zk.Capacities, n) {
			return fmt.Errorf("soak: key capacity %d is not one of %v", n, zk.Capacities)
		}
	}
	return nil
}

// runSoak starts a dev stack (simulator sim-tiny, receipts on), sends the
// mixed load for cfg.Duration while sampling this process (and the child
// prover, if any), stops the stack and judges the samples.
func runSoak(ctx context.Context, cfg soakConfig) (*soakReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	dir := cfg.DataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "tollgate-soak-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	if cfg.Prover {
		// The in-process prover sets keys up in DATA/keys; reuse the
		// cached development keys instead of minutes of set-up.
		keys := zk.TestKeyDir()
		if err := zk.EnsureDevKeys(keys, zk.Capacities[0]); err != nil {
			return nil, err
		}
		if err := os.Symlink(keys, filepath.Join(dir, "keys")); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		for _, c := range zk.Capacities {
			if pk, vk := zk.KeyFiles(keys, c); exists(pk) && exists(vk) {
				cfg.ProverKeys = append(cfg.ProverKeys, c)
			}
		}
	}
	o := devOptions{logger: cfg.logger, proverExe: cfg.proverExe}
	if cfg.Prover && cfg.proverExe != "" {
		o.backgroundKeys = devBackgroundCapacities // as runDev
	}
	if cfg.RedisURL != "" {
		rc, err := dialRedis(ctx, cfg.RedisURL, cfg.logger)
		if err != nil {
			return nil, fmt.Errorf("soak: -redis: %w", err)
		}
		defer rc.Close()
		cfg.RedisPrefix = "{" + ids.New("tg-soak-") + "}:"
		o.redisPrefix = cfg.RedisPrefix
		// Deleted after the stack and the child have stopped (defers run
		// last in, first out).
		defer deleteRedisPrefix(context.WithoutCancel(ctx), rc, cfg.RedisPrefix)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	const key = "sk-soak-0123456789"
	o.ln = ln
	o.gateway = gatewayFlags{data: dir, apiKey: key, noProver: !cfg.Prover, redisURL: cfg.RedisURL}
	o.engine = engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}
	d, err := startDev(ctx, o)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			d.stop()
		}
	}()

	rep := &soakReport{Config: cfg, Load: map[string]*loadgen.Result{}}
	var child *proverChild
	if cfg.ProverProcess {
		if child, err = startProverChild(cfg, dir); err != nil {
			return nil, err
		}
		defer child.stop()
		rep.Prover = &proverReport{PID: child.cmd.Process.Pid, Log: child.logPath}
	}
	start := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan error, 1)
	go func() { sampled <- sampleEvery(sampleCtx, start, cfg.Sample, rep, d.gw.ledger, child) }()

	hdr := map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json"}
	mix := []struct {
		name, path, body string
		share            float64
		stream           bool
	}{
		{"chat", "/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":16}`, 0.5, false},
		{"chat_stream", "/v1/chat/completions", `{"model":"sim-tiny","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}`, 0.25, true},
		{"embeddings", "/v1/embeddings", `{"model":"sim-tiny","input":["a soak test","of the gateway"]}`, 0.25, false},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var loadErr error
	for i, m := range mix {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := loadgen.Run(ctx, loadgen.Config{URL: d.URL() + m.path, Body: []byte(m.body), Header: hdr, Stream: m.stream,
				Rate: cfg.Rate * m.share, Duration: cfg.Duration, Arrival: loadgen.Poisson, Seed: uint64(i + 1), Timeout: 30 * time.Second})
			mu.Lock()
			defer mu.Unlock()
			loadErr = errors.Join(loadErr, err)
			rep.Load[m.name] = res
		}()
	}
	wg.Wait()
	stopSampling()
	if cfg.HeapProfile != "" {
		if err := writeHeapProfile(cfg.HeapProfile); err != nil {
			return nil, err
		}
	}
	if err := errors.Join(loadErr, <-sampled); err != nil {
		return nil, err
	}
	if d.gw.ledger != nil {
		if rep.Receipts, err = d.gw.ledger.Counts(ctx); err != nil {
			return nil, err
		}
		if at, ok, err := d.gw.ledger.OldestPending(ctx); err != nil {
			return nil, err
		} else if ok {
			rep.OldestPending = time.Since(at)
		}
	}
	if child != nil {
		// Stopped before the stack: the worker it countersigns with leaves
		// next.
		if err := child.stop(); err != nil {
			rep.Prover.Exit = err.Error()
		}
	}
	stopped = true
	if err := d.stop(); err != nil {
		return nil, err
	}

	for name, res := range rep.Load {
		if n := res.Errored(); n > 0 || res.OK == 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %d of %d requests failed %v", name, n, res.Sent, res.Errors))
		}
	}
	if rep.Growth, err = soak.Analyze(rep.Samples, cfg.Limits); err != nil {
		return nil, err
	}
	for _, g := range rep.Growth {
		if !g.OK {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s grew %.1f%% after warm-up (%.0f → %.0f, limit %.0f%%)", g.Series, 100*g.Growth, g.First, g.Last, 100*g.Limit))
		}
	}
	rep.ProvingRate = provingRate(rep.ReceiptSamples, cfg.Limits.Warmup)
	if p := rep.Prover; p != nil {
		gs, err := soak.Analyze(p.Samples, cfg.Limits)
		if err != nil {
			return nil, fmt.Errorf("prover process: %w", err)
		}
		for _, g := range gs {
			if g.Series != "goroutines" { // not visible from outside
				p.Growth = append(p.Growth, g)
			}
		}
		if rep.Receipts.Failed > 0 {
			rep.Failures = append(rep.Failures, fmt.Sprintf("%d receipts failed to prove", rep.Receipts.Failed))
		}
		if rep.Receipts.Proven == 0 {
			rep.Failures = append(rep.Failures, "the prover process proved no receipt")
		}
	}
	rep.Pass = len(rep.Failures) == 0
	return rep, nil
}

// provingRate is receipts proven per second between the first receipt
// sample at or after warmup and the last.
func provingRate(ss []receiptSample, warmup time.Duration) float64 {
	i := slices.IndexFunc(ss, func(s receiptSample) bool { return s.At >= warmup })
	if i < 0 || i == len(ss)-1 {
		return 0
	}
	first, last := ss[i], ss[len(ss)-1]
	return float64(last.Proven-first.Proven) / (last.At - first.At).Seconds()
}

// sampleEvery samples this process, the child prover (if any) and the
// ledger's counts (if any) at once and then every interval until ctx
// ends. The child ending on its own is an error.
func sampleEvery(ctx context.Context, start time.Time, every time.Duration, rep *soakReport, l *ledger.Ledger, child *proverChild) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		at := time.Since(start)
		s, err := soak.Read(at)
		if err != nil {
			return err
		}
		rep.Samples = append(rep.Samples, s)
		if child != nil {
			cs, err := soak.ReadProcess(child.cmd.Process.Pid, at)
			if err != nil {
				return fmt.Errorf("prover process: %w", err)
			}
			rep.Prover.Samples = append(rep.Prover.Samples, cs)
		}
		if l != nil {
			c, err := l.Counts(ctx)
			if err != nil && ctx.Err() == nil {
				return err
			}
			rep.ReceiptSamples = append(rep.ReceiptSamples, receiptSample{At: at, Counts: c})
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-child.exited():
			return fmt.Errorf("prover process exited during the soak (%v); its log: %s", err, child.logPath)
		case <-t.C:
		}
	}
}

// proverChild is `tollgate prover --redis` in a child process.
type proverChild struct {
	cmd     *exec.Cmd
	logPath string
	log     *os.File
	done    chan error // the exit, once
	waited  error
	once    sync.Once
	stopErr error
}

// startProverChild starts the child prover on the soak's Redis prefix with
// the cached development keys, its output in DIR/prover.log.
func startProverChild(cfg soakConfig, dir string) (*proverChild, error) {
	keys := zk.TestKeyDir()
	for _, n := range cfg.ProverCapacities {
		if err := zk.EnsureDevKeys(keys, n); err != nil {
			return nil, fmt.Errorf("soak: development keys for capacity %d: %w", n, err)
		}
	}
	args := []string{"prover", "--redis", cfg.RedisURL, "--redis-prefix", cfg.RedisPrefix, "--keys", keys,
		"--allow-dev-keys", "--name", "soak-prover", "--max-age", "1s"}
	var cmd *exec.Cmd
	if cfg.proverCommand != nil {
		cmd = cfg.proverCommand(args)
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("soak: -prover-process: cannot find this binary to run the prover: %w", err)
		}
		cmd = exec.Command(exe, args...)
	}
	c := &proverChild{cmd: cmd, logPath: filepath.Join(dir, "prover.log"), done: make(chan error, 1)}
	var err error
	if c.log, err = os.Create(c.logPath); err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		c.log.Close()
		return nil, fmt.Errorf("soak: start the prover process: %w", err)
	}
	go func() { c.done <- cmd.Wait() }()
	return c, nil
}

// exited yields the child's exit once it has ended (never for nil).
func (c *proverChild) exited() <-chan error {
	if c == nil {
		return nil
	}
	return c.done
}

// stop asks the child to stop (SIGTERM: it finishes or abandons its batch
// and acknowledges what it settled), kills it after a minute, and returns
// how it ended. Calls after the first return the first's result.
func (c *proverChild) stop() error {
	c.once.Do(func() {
		var err error
		select {
		case err = <-c.done: // already ended on its own
		default:
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err = <-c.done:
			case <-time.After(time.Minute):
				c.cmd.Process.Kill()
				err = fmt.Errorf("killed after a minute without stopping: %w", <-c.done)
			}
		}
		c.stopErr = errors.Join(err, c.log.Close())
	})
	return c.stopErr
}

// deleteRedisPrefix removes every key under prefix (the soak's own).
func deleteRedisPrefix(ctx context.Context, c *redis.Client, prefix string) error {
	iter := c.Scan(ctx, 0, redisGlobEscape(prefix)+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		if keys = append(keys, iter.Val()); len(keys) == 500 {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				return err
			}
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			return err
		}
	}
	return iter.Err()
}

func redisGlobEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
