package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/overhead"
	"github.com/tollgate-ai/tollgate/bench/report"
)

func init() {
	register(benchCommands, "overhead", "latency and CPU Tollgate adds over a mock upstream, direct vs through, up to saturation", runBenchOverhead)
	register(benchCommands, "serve", "internal: serve one part of bench overhead (the mock upstream or the stack) in a child process", runBenchServe)
}

// runBenchOverhead runs bench/overhead and prints Markdown tables, or with
// -json one JSON object; -plot writes PNG charts.
func runBenchOverhead(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate bench overhead", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Second, "length of each phase (direct, then through Tollgate) at each rate")
	rates := fs.String("rates", "500,1000,2000,3000,4000", "offered loads in requests/s, ascending, comma-separated")
	stream := fs.Bool("stream", true, "also run the streaming (SSE) scenario; -stream=false runs non-streaming only")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	plotDir := fs.String("plot", "", "write PNG charts into this directory")
	latency := fs.Duration("upstream-latency", time.Millisecond, "mock upstream's latency before its response")
	jitter := fs.Duration("upstream-jitter", 0, "extra uniform random upstream latency in [0, jitter)")
	tokens := fs.Int("tokens", 16, "completion tokens per mock response")
	arrival := fs.String("arrival", string(loadgen.Poisson), "arrival schedule: poisson or constant")
	seed := fs.Uint64("seed", 1, "arrival schedule seed")
	keepGoing := fs.Bool("keep-going", false, "run every rate even after one saturates (errors)")
	inProcess := fs.Bool("in-process-worker", false, "diagnostic: link the scheduler to the worker agent in process, leaving out the worker transport")
	link := fs.String("link", "inbound", "the worker link: inbound (the gateway dials the worker over HTTP, as in a data centre) or outbound (the worker dials the gateway over TLS + yamux, as behind NAT)")
	receipts := fs.Bool("receipts", true, "receipts on, as shipped (the embedded write-ahead ledger, durable worker records, record checks); -receipts=false is a diagnostic")
	layout := fs.String("layout", "processes", "processes: the mock upstream and Tollgate each in a child process, as deployed; in-process: everything in this process")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg := overhead.Config{
		Duration: *duration, Arrival: loadgen.Arrival(*arrival), Seed: *seed, KeepGoing: *keepGoing,
		InProcessWorker: *inProcess, Receipts: *receipts,
		Modes: []string{overhead.ModeJSON},
	}
	if *stream {
		cfg.Modes = append(cfg.Modes, overhead.ModeStream)
	}
	cfg.Upstream.Latency, cfg.Upstream.Jitter, cfg.Upstream.Tokens = *latency, *jitter, *tokens
	switch *link {
	case "inbound":
	case "outbound":
		if *inProcess {
			return errors.New("-link outbound and -in-process-worker exclude each other")
		}
		cfg.OutboundLink = true
	default:
		return fmt.Errorf("-link: %q is not inbound or outbound", *link)
	}
	if cfg.Arrival != loadgen.Poisson && cfg.Arrival != loadgen.Constant {
		return fmt.Errorf("-arrival: %q is not poisson or constant", *arrival)
	}
	if *duration <= 0 {
		return fmt.Errorf("-duration: %v must be positive", *duration)
	}
	for _, f := range strings.Split(*rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("-rates: %q is not a number", f)
		}
		cfg.Rates = append(cfg.Rates, v)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	switch *layout {
	case "processes":
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("-layout processes: cannot find this binary to run the parts: %w", err)
		}
		cfg.Launch = overhead.Processes(exe, "bench", "serve")
	case "in-process":
		cfg.Launch = overhead.InProcess()
	default:
		return fmt.Errorf("-layout: %q is not processes or in-process", *layout)
	}
	var progress *progressLine
	if isTerminal(os.Stdout) && !*asJSON {
		progress = &progressLine{f: os.Stdout}
		cfg.Progress = progress.show
	}
	res, runErr := overhead.Run(ctx, cfg)
	progress.clear()
	if res == nil || len(res.Steps) == 0 {
		return runErr
	}
	// An interrupted run still reports the steps it finished.
	if err := printOverhead(res, *asJSON, *plotDir); err != nil {
		return err
	}
	return runErr
}

// runBenchServe is the child side of -layout processes: it serves one part
// until its stdin ends. The stack part takes the gateway's runtime settings
// (see applyGCDefault): it stands for a deployed gateway.
func runBenchServe(ctx context.Context, args []string) error {
	cfg, err := overhead.ParseServeFlags(args)
	if err != nil {
		return err
	}
	if cfg.Part == "stack" {
		applyGCDefault(slog.Default())
	}
	return overhead.Serve(ctx, cfg, os.Stdout, overhead.StdinClosed())
}

func printOverhead(res *overhead.Result, asJSON bool, plotDir string) error {
	if plotDir != "" {
		files, err := overhead.WritePlots(plotDir, res)
		if err != nil {
			return err
		}
		if !asJSON {
			defer fmt.Printf("Plots: %s\n", strings.Join(files, ", "))
		}
	}
	if asJSON {
		return report.JSON(os.Stdout, res)
	}
	return overhead.WriteMarkdown(os.Stdout, res)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressLine rewrites one terminal line in place.
type progressLine struct {
	mu sync.Mutex
	f  *os.File
}

func (p *progressLine) show(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.f, "\r\033[K%s", line)
}

func (p *progressLine) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.f, "\r\033[K")
}
