package sched

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/tollgate-ai/tollgate/bench/plot"
)

// ErrNoLoads is returned by WritePlots given a result without loads.
var ErrNoLoads = errors.New("bench sched: the run has no loads")

// WritePlots writes p99 TTFT and goodput against load, one line per policy,
// into dir, and returns the files written.
func WritePlots(dir string, res *Result) ([]string, error) {
	if len(res.Loads) == 0 {
		return nil, ErrNoLoads
	}
	ttft := map[string]*plot.Series{}
	goodput := map[string]*plot.Series{}
	var order []string
	for _, l := range res.Loads {
		for _, p := range l.Policies {
			if ttft[p.Policy] == nil {
				ttft[p.Policy] = &plot.Series{Name: p.Policy}
				goodput[p.Policy] = &plot.Series{Name: p.Policy}
				order = append(order, p.Policy)
			}
			t, g := ttft[p.Policy], goodput[p.Policy]
			t.X, t.Y = append(t.X, l.Load), append(t.Y, p.TTFTP99)
			g.X, g.Y = append(g.X, l.Load), append(g.Y, p.Goodput)
		}
	}
	var ttftSeries, goodputSeries []plot.Series
	for _, name := range order {
		ttftSeries = append(ttftSeries, *ttft[name])
		goodputSeries = append(goodputSeries, *goodput[name])
	}
	var files []string
	ttftPath := filepath.Join(dir, "sched-ttft-p99.png")
	if err := plot.TTFTByLoad(ttftPath, "Scheduling policies: p99 time to first token against load",
		"offered load (fraction of the pool's capacity)", ttftSeries, float64(res.Config.TTFTSLO.Milliseconds())); err != nil {
		return files, err
	}
	files = append(files, ttftPath)
	goodputPath := filepath.Join(dir, "sched-goodput.png")
	if err := plot.Lines(goodputPath, plot.Chart{
		Title:  fmt.Sprintf("Scheduling policies: goodput (requests/s within the SLOs; capacity %.0f req/s)", res.CapacityRPS),
		XLabel: "offered load (fraction of the pool's capacity)", YLabel: "goodput (requests/s)",
		Series: goodputSeries, Points: true,
	}); err != nil {
		return files, err
	}
	return append(files, goodputPath), nil
}
