package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"

	"github.com/tollgate-ai/tollgate/workers/telemetry"
)

func init() {
	register(commands, "gpu", "diagnostic: print what NVML reads on this machine (make test-gpu)", runGPU)
}

// runGPU reads every GPU once through NVML and prints it: a table, or JSON
// with -json; -metrics also prints the worker's /metrics exposition; with
// -require it fails when no GPU could be read (for `make test-gpu`).
func runGPU(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate gpu", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the GPUs as JSON")
	metrics := fs.Bool("metrics", false, "also print the DCGM-style /metrics text the worker serves")
	require := fs.Bool("require", false, "fail when NVML is unavailable or reports no GPU")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	c := telemetry.NewNVML(logger, telemetry.WithCacheTTL(0))
	defer c.Close()

	gpus := c.GPUs(ctx)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(gpus); err != nil {
			return err
		}
	} else {
		fmt.Printf("NVML: %d GPU(s)\n", len(gpus))
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GPU\tNAME\tUUID\tMEM USED/TOTAL MiB\tFREE MiB\tUTIL %\tMEM UTIL %\tTEMP C\tPOWER W\tSM MHz\tMEM MHz\tMIG\tENERGY mJ")
		for _, g := range gpus {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\t%t\t%d\n",
				g.Index, g.Name, g.UUID, g.MemoryUsedMiB, g.MemoryTotalMiB, g.MemoryFreeMiB,
				g.GPUUtilPct, g.MemUtilPct, g.TemperatureC, g.PowerW, g.SMClockMHz, g.MemClockMHz, g.MIGEnabled, g.EnergyMJ)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if *metrics {
		host, _ := os.Hostname()
		if err := telemetry.WriteDCGM(os.Stdout, c, host); err != nil {
			return err
		}
	}
	if *require && len(gpus) == 0 {
		return errors.New("gpu: no GPU read through NVML (is the NVIDIA driver installed?)")
	}
	return nil
}
