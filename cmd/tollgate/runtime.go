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
// thousand requests per second it would collect ~10 times a second, and
// each collection's pauses and mark assists land in the latency tail. At 400
// the heap peaks near five times what is live and collections are a
// quarter as frequent: measured on the 2-core dev box at 2,000 req/s, the
// gateway's added p99 fell from ~1.4 ms to ~1.0 ms (docs/benchmarks.md).
// GOGC (and GOMEMLIMIT, which caps the heap whatever the percent) still
// override it.
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
