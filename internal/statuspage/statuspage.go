// Package statuspage renders the gateway's read-only status page at "/":
// workers with their GPU telemetry, models, load, recent request rate and
// latency, and the receipts backlog. It is one server-rendered HTML page
// (html/template, inline CSS, no scripts, no build step); every value is
// escaped. The gateway fills a Snapshot from its scheduler, metrics and
// ledger and calls Render.
package statuspage

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Snapshot is everything the page shows, gathered at one moment.
type Snapshot struct {
	Now     time.Time
	Version string
	// RefreshSeconds makes the browser reload the page; 0: no reload.
	RefreshSeconds int

	Workers  []Worker
	Models   []task.ModelVersion
	Load     Load
	Requests Requests
	Receipts Receipts
	Audit    Audit
}

// Audit is the auditor's tally; Enabled false hides the card.
type Audit struct {
	Enabled                            bool
	Audited, Passed, Disputes, Dropped uint64
	Share                              float64 // audit work over served work
}

// Worker is one registered worker as the scheduler sees it.
type Worker struct {
	ID             string
	URL            string
	Healthy        bool
	Draining       bool
	Disputed       bool      // an audit took it out of rotation
	LastHeartbeat  time.Time // zero: never
	InFlight       int
	MaxConcurrency int
	Queued         int
	Models         []string
	Load           task.Load
	GPUs           []task.GPU
}

// Load is the whole gateway's load now.
type Load struct {
	QueueLength int
	InFlight    int
}

// Requests summarises recent traffic over Window.
type Requests struct {
	Window     time.Duration
	RatePerSec float64
	ErrorRate  float64 // 0..1
	LatencyP50 time.Duration
	LatencyP95 time.Duration
	TTFTP50    time.Duration
	TTFTP95    time.Duration
}

// Receipts is the ledger's backlog; Enabled false hides the section.
type Receipts struct {
	Enabled                 bool
	Pending, Proven, Failed int64
	// OldestPending is the age of the oldest unproven receipt.
	OldestPending time.Duration
}

//go:embed status.html.tmpl
var pageSource string

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago":      ago,
	"dur":      dur,
	"pct":      func(f float64) string { return fmt.Sprintf("%.1f%%", 100*clamp01(f)) },
	"width":    func(f float64) int { return int(math.Round(100 * clamp01(f))) },
	"memShare": memShare,
	"short":    short,
	"rate":     func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"ratio":    func(a, b int) float64 { return safeRatio(float64(a), float64(b)) },
}).Parse(pageSource))

// Render writes the page. It renders into memory first, so on error
// nothing has been written to w.
func Render(w io.Writer, s Snapshot) error {
	var buf bytes.Buffer
	view := struct {
		Snapshot
		Healthy int
	}{Snapshot: s}
	for _, wk := range s.Workers {
		if wk.Healthy {
			view.Healthy++
		}
	}
	if err := page.Execute(&buf, view); err != nil {
		return fmt.Errorf("statuspage: render: %w", err)
	}
	_, err := buf.WriteTo(w)
	return err
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return dur(now.Sub(t)) + " ago"
}

// dur formats a duration compactly for people: 850µs, 12.3ms, 1.24s, 3m05s.
func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// short abbreviates a hex digest for display (the full one is in the title).
func short(d string) string {
	if len(d) <= 16 {
		return d
	}
	return d[:16] + "…"
}

func memShare(g task.GPU) float64 {
	return safeRatio(float64(g.MemoryUsedMiB), float64(g.MemoryTotalMiB))
}

func safeRatio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return clamp01(a / b)
}

func clamp01(f float64) float64 {
	if f != f || f < 0 {
		return 0
	}
	if f > 1 {
		return 1
	}
	return f
}
