// Package plot draws the benches' PNG charts with gonum/plot: line charts of
// plain data with titled axes, a legend and an optional threshold line. The
// named helpers fix the axes of the charts the benches share: latency CDF
// per scenario, added latency vs rate, and TTFT p99 vs load per policy.
package plot

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Series is one named line: points (X[i], Y[i]), in order of X.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is a line chart.
type Chart struct {
	Title, XLabel, YLabel string
	// LogX and LogY use logarithmic axes (non-positive values are dropped).
	LogX, LogY bool
	Series     []Series
	// Threshold, when Label is set, draws a dashed horizontal line at Y.
	Threshold Threshold
	// Points marks each data point (for short series such as rate steps).
	Points bool
	// LegendBottomRight moves the legend from the top left, where rising
	// curves such as CDFs have their empty corner at the bottom right.
	LegendBottomRight bool
}

// Threshold is a horizontal reference line, such as a latency target.
type Threshold struct {
	Y     float64
	Label string
}

// Size of the written images.
const (
	Width  = 8 * vg.Inch
	Height = 5 * vg.Inch
)

// Lines writes c as a PNG to path, creating path's directory.
func Lines(path string, c Chart) error {
	if len(c.Series) == 0 {
		return errors.New("plot: no series")
	}
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = c.XLabel
	p.Y.Label.Text = c.YLabel
	p.Legend.Top = !c.LegendBottomRight
	p.Legend.Left = !c.LegendBottomRight
	p.Legend.Padding = vg.Points(4)
	p.Add(plotter.NewGrid())
	p.X.Tick.Marker, p.Y.Tick.Marker = plainTicks{}, plainTicks{}
	if c.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = logTicks{}
	}
	if c.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	}
	drawn := 0
	for i, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("plot: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		xys := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if bad(x) || bad(y) || c.LogX && x <= 0 || c.LogY && y <= 0 {
				continue
			}
			xys = append(xys, plotter.XY{X: x, Y: y})
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plot: series %q: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		if c.Points {
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return fmt.Errorf("plot: series %q: %w", s.Name, err)
			}
			sc.Color = plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			p.Add(sc)
			p.Legend.Add(s.Name, l, sc)
		} else {
			p.Legend.Add(s.Name, l)
		}
		drawn++
	}
	if drawn == 0 {
		return errors.New("plot: no drawable points")
	}
	if c.Threshold.Label != "" {
		t := plotter.NewFunction(func(float64) float64 { return c.Threshold.Y })
		t.Color = color.RGBA{R: 200, A: 255}
		t.Width = vg.Points(1)
		t.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(t)
		p.Legend.Add(c.Threshold.Label, t)
		// Keep the threshold in view.
		p.Y.Max = math.Max(p.Y.Max, c.Threshold.Y*1.1)
		if c.LogY {
			p.Y.Min = math.Min(p.Y.Min, c.Threshold.Y*0.9)
		} else {
			p.Y.Min = math.Min(p.Y.Min, 0)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := p.Save(Width, Height, path); err != nil {
		return fmt.Errorf("plot: save %s: %w", path, err)
	}
	return nil
}

// plainTicks are gonum's default ticks with labels in shortest form
// ("750", not "750.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = strconv.FormatFloat(t.Value, 'g', 6, 64)
		}
	}
	return ticks
}

// logTicks labels a log axis at 1, 2 and 5 times each power of ten, with
// unlabelled minor ticks between, so short ranges still read.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || hi < lo {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := float64(m) * base
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

func bad(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

func anyPositive(series []Series) bool {
	for _, s := range series {
		for _, y := range s.Y {
			if y > 0 && !bad(y) {
				return true
			}
		}
	}
	return false
}

// LatencyCDF writes the latency distribution of each scenario: X in
// milliseconds (log axis), Y the fraction of requests at or below it.
func LatencyCDF(path, title string, scenarios []Series) error {
	return Lines(path, Chart{
		Title: title, XLabel: "latency (ms, log scale)", YLabel: "fraction of requests ≤ latency",
		LogX: true, Series: scenarios, LegendBottomRight: true,
	})
}

// AddedLatency writes latency added by the gateway against offered load:
// one series per quantile (X requests/s, Y milliseconds on a log axis, as
// added latency spans sub-millisecond to seconds past saturation), with the
// target drawn as a threshold when target > 0. Points at or below zero
// (noise where the gateway added nothing measurable) cannot sit on a log
// axis and are left out.
func AddedLatency(path, title string, quantiles []Series, target float64) error {
	c := Chart{
		Title: title, XLabel: "offered load (requests/s)", YLabel: "added latency (ms, log scale)",
		Series: quantiles, Points: true, LogY: true,
	}
	if !anyPositive(quantiles) {
		// Nothing measurable was added (a short run's noise): a linear
		// axis still shows the points, around zero.
		c.LogY, c.YLabel = false, "added latency (ms)"
	}
	if target > 0 {
		c.Threshold = Threshold{Y: target, Label: fmt.Sprintf("target %.3g ms", target)}
	}
	return Lines(path, c)
}

// TTFTByLoad writes p99 time to first token against load, one series per
// scheduling policy (X load as a fraction of capacity or requests/s, as
// xLabel says; Y milliseconds), with the SLO as a threshold when slo > 0.
func TTFTByLoad(path, title, xLabel string, policies []Series, slo float64) error {
	// Policies differ by orders of magnitude near saturation: a log axis
	// keeps the good ones readable next to the bad.
	c := Chart{
		Title: title, XLabel: xLabel, YLabel: "TTFT p99 (ms, log scale)",
		Series: policies, Points: true, LogY: true,
	}
	if !anyPositive(policies) {
		c.LogY, c.YLabel = false, "TTFT p99 (ms)"
	}
	if slo > 0 {
		c.Threshold = Threshold{Y: slo, Label: "SLO " + strconv.FormatFloat(slo, 'f', -1, 64) + " ms"}
	}
	return Lines(path, c)
}
