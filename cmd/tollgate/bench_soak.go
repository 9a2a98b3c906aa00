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
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/soak"
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
	Prover  bool   `json:"prover"`
	DataDir string `json:"-"`
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
	Samples       []soak.Sample `json:"samples"`
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
	fs.BoolVar(&cfg.Prover, "prover", false, "prove receipts in this process, as `tollgate dev` does (default: receipts stay pending, as with `tollgate prover` in its own process)")
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
	fmt.Fprintf(os.Stderr, "soak: receipts %+v, oldest unproven %s old\n", rep.Receipts, rep.OldestPending.Round(time.Second))
	if !rep.Pass {
		return fmt.Errorf("soak failed: %v", rep.Failures)
	}
	fmt.Fprintln(os.Stderr, "soak: pass")
	return nil
}

// runSoak starts a dev stack (simulator sim-tiny, receipts on), sends the
// mixed load for cfg.Duration while sampling this process, stops the stack
// and judges the samples.
func runSoak(ctx context.Context, cfg soakConfig) (*soakReport, error) {
	if cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.Sample <= 0 {
		return nil, errors.New("soak: -rate, -duration and -sample must be positive")
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
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	const key = "sk-soak-0123456789"
	o := devOptions{ln: ln, logger: cfg.logger}
	o.gateway = gatewayFlags{data: dir, apiKey: key, noProver: !cfg.Prover}
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
	start := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan error, 1)
	go func() { sampled <- sampleEvery(sampleCtx, start, cfg.Sample, &rep.Samples) }()

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
	rep.Pass = len(rep.Failures) == 0
	return rep, nil
}

// sampleEvery appends a sample at once and then every interval until ctx
// ends.
func sampleEvery(ctx context.Context, start time.Time, every time.Duration, out *[]soak.Sample) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s, err := soak.Read(time.Since(start))
		if err != nil {
			return err
		}
		*out = append(*out, s)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}
