package proving

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/tollgate-ai/tollgate/bench/plot"
	"github.com/tollgate-ai/tollgate/bench/report"
)

// ErrEmpty is returned by report functions given a result with no capacity.
var ErrEmpty = errors.New("bench receipts: the run measured no capacity")

// Tables renders the per-capacity figures and, when measured, the
// pipeline's latency.
func Tables(res *Result) []report.Table {
	t := report.Table{
		Title: "Proving a full batch (Groth16 on BN254, development keys)",
		Columns: []string{"capacity", "constraints", "constraints/receipt", "prove s/batch (mean)", "prove s (min)",
			"receipts/s", "prove ms/receipt", "verify ms", "proof bytes", "pk MiB", "key set-up s"},
	}
	for _, c := range res.Capacities {
		setup := "cached"
		if c.SetupSeconds > 0 {
			setup = report.FormatFloat(c.SetupSeconds)
		}
		t.AddRow(c.Capacity, c.Constraints, c.ConstraintsPerLeaf, c.ProveSeconds, c.ProveSecondsMin,
			c.ReceiptsPerSecond, c.ProveMillisPerLeaf, c.VerifyMilliseconds, c.ProofBytes,
			float64(c.ProvingKeyBytes)/(1<<20), setup)
	}
	out := []report.Table{t}
	if l := res.Latency; l != nil {
		lt := report.Table{
			Title:   fmt.Sprintf("Receipt latency at low load: response → proven through the prover pipeline (max_age %s, interval %s)", l.MaxAge, l.Interval),
			Columns: []string{"receipts", "batch capacity used", "p50 s", "min s", "max s"},
		}
		lt.AddRow(l.Receipts, l.BatchCapacity, l.P50Seconds, l.MinSeconds, l.MaxSeconds)
		out = append(out, lt)
	}
	return out
}

// WriteMarkdown writes the run's header and tables.
func WriteMarkdown(w io.Writer, res *Result) error {
	if len(res.Capacities) == 0 {
		return ErrEmpty
	}
	fmt.Fprintf(w, "Machine: %s.\n", res.Env)
	fmt.Fprintf(w, "Each capacity: %d full batches proven (the prover verifies each fresh proof before returning it; that is in the time), "+
		"each proof verified %d times. Receipts/s is one prover's rate on full batches; proofs run one at a time, each on every core.\n\n",
		res.Config.Proofs, res.Config.Verifies)
	for _, t := range Tables(res) {
		if err := t.Markdown(w); err != nil {
			return err
		}
	}
	if l := res.Latency; l != nil {
		_, err := fmt.Fprintf(w, "At low load a receipt waits for its batch to close (max_age %s), for the next pass (≤ %s), "+
			"the worker's countersignature and one proof at capacity %d.\n", l.MaxAge, l.Interval, l.BatchCapacity)
		return err
	}
	return nil
}

// WritePlots writes proving time and throughput against capacity into dir
// and returns the files written.
func WritePlots(dir string, res *Result) ([]string, error) {
	if len(res.Capacities) == 0 {
		return nil, ErrEmpty
	}
	prove := plot.Series{Name: "prove one full batch (s)"}
	perLeaf := plot.Series{Name: "prove time per receipt (ms)"}
	verify := plot.Series{Name: "verify one proof (ms)"}
	rate := plot.Series{Name: "receipts proven per second"}
	for _, c := range res.Capacities {
		x := float64(c.Capacity)
		prove.X, prove.Y = append(prove.X, x), append(prove.Y, c.ProveSeconds)
		perLeaf.X, perLeaf.Y = append(perLeaf.X, x), append(perLeaf.Y, c.ProveMillisPerLeaf)
		verify.X, verify.Y = append(verify.X, x), append(verify.Y, c.VerifyMilliseconds)
		rate.X, rate.Y = append(rate.X, x), append(rate.Y, c.ReceiptsPerSecond)
	}
	var files []string
	timePath := filepath.Join(dir, "receipts-prove-time.png")
	if err := plot.Lines(timePath, plot.Chart{
		Title: "Receipt proofs: time against batch capacity", XLabel: "batch capacity (receipts, log scale)",
		YLabel: "time (log scale)", LogX: true, LogY: true, Points: true,
		Series: []plot.Series{prove, perLeaf, verify},
	}); err != nil {
		return files, err
	}
	files = append(files, timePath)
	ratePath := filepath.Join(dir, "receipts-throughput.png")
	if err := plot.Lines(ratePath, plot.Chart{
		Title: "Receipt proofs: throughput of one prover", XLabel: "batch capacity (receipts, log scale)",
		YLabel: "receipts proven per second", LogX: true, Points: true,
		Series: []plot.Series{rate},
	}); err != nil {
		return files, err
	}
	files = append(files, ratePath)
	return files, nil
}
