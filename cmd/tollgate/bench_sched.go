package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/bench/report"
	"github.com/tollgate-ai/tollgate/bench/sched"
	"github.com/tollgate-ai/tollgate/scheduler"
)

func init() {
	register(benchCommands, "sched", "scheduling policies on a simulated pool (virtual time): p99 TTFT, goodput, shed", runBenchSched)
}

// runBenchSched replays one trace per load under each policy and prints a
// Markdown table per load, or with -json one JSON object.
func runBenchSched(_ context.Context, args []string) error {
	cfg := sched.DefaultConfig()
	fs := flag.NewFlagSet("tollgate bench sched", flag.ContinueOnError)
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "simulated length of each run's trace")
	loads := fs.String("loads", "0.7,0.9", "arrival rates as fractions of the pool's capacity, comma-separated")
	policies := fs.String("policies", strings.Join(cfg.Policies, ","), "policies to compare, comma-separated")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "trace and jitter seed")
	fs.DurationVar(&cfg.TTFTSLO, "ttft-slo", cfg.TTFTSLO, "time-to-first-token SLO for goodput")
	fs.DurationVar(&cfg.TPOTSLO, "tpot-slo", cfg.TPOTSLO, "time-per-output-token SLO for goodput")
	fs.DurationVar(&cfg.Deadline, "deadline", 0, "give every request this deadline (interactive class; lets tollgate shed)")
	fs.StringVar(&cfg.SlowWorker, "slow-worker", cfg.SlowWorker, "worker that slows down halfway (empty: none)")
	fs.Float64Var(&cfg.Slowdown, "slowdown", cfg.Slowdown, "the slow worker's latency factor after halfway")
	fs.Float64Var(&cfg.AuditRate, "audit-rate", 0, "inject spot re-execution audits: fraction of completed requests re-executed on another worker at priority batch")
	fs.Float64Var(&cfg.AuditShare, "audit-share", 0.05, "cap on audit work over served work, in tokens (the auditor's max_share)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	plotDir := fs.String("plot", "", "write PNG charts (p99 TTFT and goodput against load, per policy) into this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.Loads = nil
	for _, f := range strings.Split(*loads, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("-loads: %q is not a number", f)
		}
		cfg.Loads = append(cfg.Loads, v)
	}
	cfg.Policies = nil
	for _, p := range strings.Split(*policies, ",") {
		cfg.Policies = append(cfg.Policies, strings.TrimSpace(p))
	}
	res, err := sched.Run(cfg)
	if err != nil {
		return err
	}
	if *plotDir != "" {
		files, err := sched.WritePlots(*plotDir, res)
		if err != nil {
			return err
		}
		if !*asJSON {
			defer fmt.Printf("Plots: %s\n", strings.Join(files, ", "))
		}
	}
	if *asJSON {
		return report.JSON(os.Stdout, res)
	}
	fmt.Printf("Pool: %d simulated workers (%s), %s slows down %.0f× at %s; capacity %.0f req/s.\n",
		len(cfg.Workers), workerList(cfg), cfg.SlowWorker, cfg.Slowdown, cfg.Duration/2, res.CapacityRPS)
	fmt.Printf("Trace: Poisson arrivals for %s (virtual time), log-normal prompt (median %.0f) and output (median %.0f) tokens; SLOs TTFT ≤ %s, TPOT ≤ %s.\n\n",
		cfg.Duration, cfg.PromptMedian, cfg.OutputMedian, cfg.TTFTSLO, cfg.TPOTSLO)
	for _, l := range res.Loads {
		t := report.Table{
			Title:   fmt.Sprintf("Load %.0f%% (%.0f req/s, %d requests)", l.Load*100, l.RateRPS, l.Requests),
			Columns: []string{"policy", "TTFT p50 ms", "TTFT p99 ms", "E2E p99 ms", "TPOT p99 ms", "goodput req/s", "shed", "failed"},
		}
		if cfg.AuditRate > 0 {
			t.Columns = append(t.Columns, "audits", "skipped", "audit share")
		}
		for _, p := range l.Policies {
			row := []any{p.Policy, p.TTFTP50, p.TTFTP99, p.E2EP99, p.TPOTP99, p.Goodput, p.Shed, p.Failed}
			if cfg.AuditRate > 0 {
				row = append(row, p.AuditsDone, p.AuditsSkipped, p.AuditShare)
			}
			t.AddRow(row...)
		}
		if err := t.Markdown(os.Stdout); err != nil {
			return err
		}
		if v := verdict(l); v != "" {
			fmt.Println(v)
			fmt.Println()
		}
	}
	return nil
}

func workerList(cfg sched.Config) string {
	var ids []string
	for _, w := range cfg.Workers {
		ids = append(ids, w.ID)
	}
	return strings.Join(ids, ", ")
}

// verdict compares tollgate with the baselines (issue 5's done-when ratios).
func verdict(l sched.LoadResult) string {
	by := map[string]sched.PolicyResult{}
	for _, p := range l.Policies {
		by[p.Policy] = p
	}
	tg, ok1 := by[scheduler.PolicyTollgate]
	rr, ok2 := by[scheduler.PolicyRoundRobin]
	lr, ok3 := by[scheduler.PolicyLeastRequest]
	if !ok1 || !ok2 || !ok3 || rr.TTFTP99 == 0 || lr.TTFTP99 == 0 {
		return ""
	}
	return fmt.Sprintf("tollgate p99 TTFT = %.2f× round-robin's, %.2f× least-request's; goodput %.2f× least-request's.",
		tg.TTFTP99/rr.TTFTP99, tg.TTFTP99/lr.TTFTP99, tg.Goodput/max(lr.Goodput, 1e-9))
}
