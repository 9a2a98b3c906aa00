package overhead

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/plot"
	"github.com/tollgate-ai/tollgate/bench/report"
)

// Tables returns one table per mode: for each rate, direct and through
// latency, added latency per quantile (and added TTFT for streams), the
// completed rate, errors, gateway CPU per request, and the load
// generator's own p99 lateness in sending (the worse of the two phases).
func Tables(res *Result) []report.Table {
	var out []report.Table
	for _, mode := range modes(res) {
		t := report.Table{
			Title: fmt.Sprintf("%s: added latency through Tollgate (ms; through − direct at the same rate)", modeTitle(mode)),
			Columns: []string{"rate rps", "direct p50", "direct p99", "through p50", "through p99",
				"added p50", "added p90", "added p99", "added p99.9"},
		}
		stream := mode == ModeStream
		if stream {
			t.Columns = append(t.Columns, "TTFT added p50", "TTFT added p99")
		}
		t.Columns = append(t.Columns, "done rps", "errors", "gateway CPU µs/req", "gen lag p99")
		for _, st := range res.Steps {
			if st.Mode != mode {
				continue
			}
			row := []any{
				st.Rate, st.Direct.Latency.P50, st.Direct.Latency.P99, st.Through.Latency.P50, st.Through.Latency.P99,
				st.Added.P50, st.Added.P90, st.Added.P99, st.Added.P999,
			}
			if stream {
				if st.AddedTTFT != nil {
					row = append(row, st.AddedTTFT.P50, st.AddedTTFT.P99)
				} else {
					row = append(row, "–", "–")
				}
			}
			row = append(row, st.ThroughRPS, errorText(st), st.CPUPerRequestUS,
				max(st.Direct.SendLag.P99, st.Through.SendLag.P99))
			t.AddRow(row...)
		}
		out = append(out, t)
	}
	return out
}

func modes(res *Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, st := range res.Steps {
		if !seen[st.Mode] {
			seen[st.Mode] = true
			out = append(out, st.Mode)
		}
	}
	return out
}

func modeTitle(mode string) string {
	if mode == ModeStream {
		return "Streaming (SSE)"
	}
	return "Non-streaming (JSON)"
}

// errorText lists a step's errors by class, e.g. "12 (through: overload 12)".
func errorText(st Step) string {
	n := st.Errors()
	if n == 0 {
		return "0"
	}
	var parts []string
	for _, ph := range []struct {
		name string
		r    *loadgen.Result
	}{{"direct", st.Direct}, {"through", st.Through}} {
		if len(ph.r.Errors) == 0 {
			continue
		}
		keys := make([]string, 0, len(ph.r.Errors))
		for k := range ph.r.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var cls []string
		for _, k := range keys {
			cls = append(cls, fmt.Sprintf("%s %d", k, ph.r.Errors[k]))
		}
		parts = append(parts, ph.name+": "+strings.Join(cls, ", "))
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, "; "))
}

// WriteMarkdown writes the run's header, tables and summary.
func WriteMarkdown(w io.Writer, res *Result) error {
	if len(res.Steps) == 0 {
		return ErrNoSteps
	}
	e := res.Env
	fmt.Fprintf(w, "Machine: %s, %d CPUs (GOMAXPROCS %d), %s %s; %s.\n", e.CPUModel, e.NumCPU, e.GOMAXPROCS, e.GoVersion, e.OS, e.Date)
	fmt.Fprintf(w, "Load: open loop, %s arrivals, %s per phase, latency from each request's scheduled send time. "+
		"Upstream: mock, %.3g ms latency (+%.3g ms jitter), %d tokens per response.\n\n",
		res.Arrival, res.Duration, res.Upstream.LatencyMS, res.Upstream.JitterMS, res.Upstream.Tokens)
	if res.Layout == "processes" {
		fmt.Fprintf(w, "Layout: load generator, mock upstream and Tollgate (gateway + worker over loopback HTTP) each in its own process, as deployed.\n\n")
	}
	if res.Receipts {
		fmt.Fprintf(w, "Receipts on, as shipped: every response waits for its receipt in the embedded ledger (write-ahead log, fdatasync'd per group), the worker keeps its records durably and the gateway checks each; the prover runs apart (not in the stack).\n\n")
	} else {
		fmt.Fprintf(w, "Diagnostic run: receipts off (no ledger, no record checks).\n\n")
	}
	if res.WorkerLink == "outbound" {
		fmt.Fprintf(w, "Worker link: outbound, as a worker behind NAT runs it — the worker dialled the gateway's worker port (TLS 1.3, a certificate made for the run) and batches go over yamux streams of that one connection.\n\n")
	}
	if res.WorkerLink == "in-process" {
		fmt.Fprintf(w, "Diagnostic run: the scheduler calls the worker agent in process; the worker transport is left out.\n\n")
	}
	for _, t := range Tables(res) {
		if err := t.Markdown(w); err != nil {
			return err
		}
	}
	for _, mode := range modes(res) {
		if r := res.MaxRate[mode]; r > 0 {
			fmt.Fprintf(w, "%s: highest rate holding added p99 ≤ %.0f ms with no errors: %.0f rps.\n", modeTitle(mode), TargetP99, r)
		} else {
			fmt.Fprintf(w, "%s: no rate held added p99 ≤ %.0f ms with no errors.\n", modeTitle(mode), TargetP99)
		}
	}
	if res.Layout == "processes" {
		_, err := fmt.Fprintf(w, "Peak RSS of the Tollgate process (gateway and worker): %.0f MiB.\n", res.PeakRSSMiB)
		return err
	}
	_, err := fmt.Fprintf(w, "Peak RSS of the whole process (load generator, mock, gateway, worker): %.0f MiB.\n", res.PeakRSSMiB)
	return err
}

// WritePlots writes, per mode, the latency CDF (direct and through at the
// lowest rate and at the highest error-free rate) and added latency vs
// rate, into dir. It returns the files written.
func WritePlots(dir string, res *Result) ([]string, error) {
	if len(res.Steps) == 0 {
		return nil, ErrNoSteps
	}
	var files []string
	for _, mode := range modes(res) {
		var steps []Step
		for _, st := range res.Steps {
			if st.Mode == mode {
				steps = append(steps, st)
			}
		}
		picked := []Step{steps[0]}
		for i := len(steps) - 1; i > 0; i-- {
			if steps[i].Errors() == 0 {
				picked = append(picked, steps[i])
				break
			}
		}
		var cdf []plot.Series
		for _, st := range picked {
			for _, ph := range []struct {
				name string
				r    *loadgen.Result
			}{{"direct", st.Direct}, {"through Tollgate", st.Through}} {
				x, y := loadgen.CDF(ph.r.LatencyHistogram())
				cdf = append(cdf, plot.Series{Name: fmt.Sprintf("%s @ %.0f rps", ph.name, st.Rate), X: x, Y: y})
			}
		}
		path := filepath.Join(dir, "overhead-cdf-"+mode+".png")
		if err := plot.LatencyCDF(path, modeTitle(mode)+": latency CDF, direct vs through Tollgate", cdf); err != nil {
			return files, err
		}
		files = append(files, path)

		qs := []plot.Series{{Name: "added p50"}, {Name: "added p90"}, {Name: "added p99"}, {Name: "added p99.9"}}
		ttft := plot.Series{Name: "TTFT added p99"}
		for _, st := range steps {
			for i, v := range []float64{st.Added.P50, st.Added.P90, st.Added.P99, st.Added.P999} {
				qs[i].X, qs[i].Y = append(qs[i].X, st.Rate), append(qs[i].Y, v)
			}
			if st.AddedTTFT != nil {
				ttft.X, ttft.Y = append(ttft.X, st.Rate), append(ttft.Y, st.AddedTTFT.P99)
			}
		}
		if len(ttft.X) > 0 {
			qs = append(qs, ttft)
		}
		path = filepath.Join(dir, "overhead-added-"+mode+".png")
		if err := plot.AddedLatency(path, modeTitle(mode)+": latency added by Tollgate vs load", qs, TargetP99); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}
