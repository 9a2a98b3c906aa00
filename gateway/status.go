package gateway

import (
	"context"
	"time"

	"github.com/tollgate-ai/tollgate/internal/statuspage"
	"github.com/valyala/fasthttp"
)

// statusWindow is how far back the status page's request summary looks.
const statusWindow = time.Minute

// statusPage renders the read-only status page. It needs no key: it shows
// aggregate load, models, GPU telemetry and the receipts backlog, and
// leaves out what a stranger could use against the cluster (worker URLs;
// session tokens never reach it).
func (s *Server) statusPage(rc *fasthttp.RequestCtx) error {
	now := s.clock.Now()
	snap := statuspage.Snapshot{Now: now, Version: s.deps.Version, RefreshSeconds: 10, Models: s.deps.Dispatcher.Models()}
	if src := s.deps.Status; src != nil {
		snap.Workers = src.StatusWorkers()
		for i := range snap.Workers {
			snap.Workers[i].URL = ""
		}
		snap.Load = src.StatusLoad()
	}
	r := s.deps.Obs.Recent().Summary(now, statusWindow)
	snap.Requests = statuspage.Requests{Window: r.Window, RatePerSec: r.RatePerSec, ErrorRate: r.ErrorRate,
		LatencyP50: r.LatencyP50, LatencyP95: r.LatencyP95, TTFTP50: r.TTFTP50, TTFTP95: r.TTFTP95}
	if s.deps.Receipts != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rec, err := s.deps.Receipts.ReceiptCounts(ctx)
		if err != nil {
			s.log.Warn("status page: receipts backlog unavailable", "err", err)
		} else {
			snap.Receipts = rec
			snap.Receipts.Enabled = true
		}
	}
	if s.deps.AuditStatus != nil {
		snap.Audit = s.deps.AuditStatus()
		snap.Audit.Enabled = true
	}
	rc.SetContentType("text/html; charset=utf-8")
	rc.Response.Header.Set("Cache-Control", "no-store")
	return statuspage.Render(rc, snap)
}
