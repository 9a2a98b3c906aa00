package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/bench/proving"
	"github.com/tollgate-ai/tollgate/bench/report"
)

func init() {
	register(benchCommands, "receipts", "receipt proofs: constraints, proving and verify time, proof size, receipts/s, response → proven latency", runBenchReceipts)
}

// runBenchReceipts runs bench/proving and prints Markdown tables, or with
// -json one JSON object; -plot writes PNG charts.
func runBenchReceipts(ctx context.Context, args []string) error {
	cfg := proving.DefaultConfig()
	fs := flag.NewFlagSet("tollgate bench receipts", flag.ContinueOnError)
	caps := fs.String("capacity", "8,64", "batch capacities, comma-separated (256 and 1024 need minutes of key set-up the first time)")
	fs.StringVar(&cfg.KeyDir, "keys", cfg.KeyDir, "directory of development keys, made there when missing and reused after")
	fs.IntVar(&cfg.Proofs, "proofs", cfg.Proofs, "full batches proven per capacity")
	fs.IntVar(&cfg.Verifies, "verifies", cfg.Verifies, "verifications of each capacity's proof")
	fs.IntVar(&cfg.LatencyReceipts, "latency-receipts", cfg.LatencyReceipts, "receipts sent one at a time through the prover pipeline (0: skip)")
	fs.DurationVar(&cfg.MaxAge, "max-age", cfg.MaxAge, "the pipeline's max_age: a batch closes when its oldest receipt is this old")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "the pipeline's interval between ledger scans")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	plotDir := fs.String("plot", "", "write PNG charts into this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cs, err := parseCapacities(*caps)
	if err != nil {
		return fmt.Errorf("-capacity: %w", err)
	}
	cfg.Capacities = cs
	if err := cfg.Validate(); err != nil {
		return err
	}
	var progress *progressLine
	if isTerminal(os.Stdout) && !*asJSON {
		progress = &progressLine{f: os.Stdout}
		start := time.Now()
		cfg.Progress = func(line string) { progress.show(fmt.Sprintf("%5.0fs  %s", time.Since(start).Seconds(), line)) }
	}
	res, err := proving.Run(ctx, cfg)
	progress.clear()
	if err != nil {
		return err
	}
	if *plotDir != "" {
		files, err := proving.WritePlots(*plotDir, res)
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
	return proving.WriteMarkdown(os.Stdout, res)
}
