package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the garbage collector's target for Tollgate's
// long-running servers (gateway, worker, dev) when GOGC is not set. Go's
// default, 100, lets the heap grow to twice what is live before a
// collection; a gateway's live heap is small (tens of MiB), so at a few
// thousand requests per second it collects several times a second, and each
// collection's pauses and mark assists land in the latency tail. At 400 the
// heap peaks near five times what is live and collections are a quarter as
// frequent. Measured with `tollgate bench overhead` on the 2-core dev box
// (2026-11-29, three runs each, JSON): added p99 at 3,000 req/s 1.6–1.9 ms
// at 100 against 0.5–0.7 ms at 400 (at 2,000 req/s 0.38–0.59 against
// 0.33–0.51 ms), for a peak RSS of 128 MiB instead of 81 MiB. GOGC (and
// GOMEMLIMIT, which caps the heap whatever the percent) still override it.
const DefaultGCPercent = 400

// applyGCDefault sets DefaultGCPercent unless GOGC is set, and logs the
// garbage collector's setting.
func applyGCDefault(logger *slog.Logger) {
	if v, ok := os.LookupEnv("GOGC"); ok {
		logger.Debug("garbage collector target from GOGC", "gogc", v)
		return
	}
	debug.SetGCPercent(DefaultGCPercent)
	logger.Debug("garbage collector target", "gc_percent", DefaultGCPercent)
}
