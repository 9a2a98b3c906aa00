package gateway

import (
	"strings"
	"testing"
)

// Profiling is off unless configured, and then only for admin keys: a
// heap or goroutine dump shows request bodies and keys in memory.
func TestPprof(t *testing.T) {
	off := newHarness(t, nil)
	on := newHarness(t, func(c *Config, _ *Deps) { c.Pprof = true })
	tests := []struct {
		name   string
		h      *harness
		path   string
		key    string
		status int
		body   string
	}{
		{"off even for admin", off, "/debug/pprof/goroutine?debug=1", adminKey, 404, ""},
		{"on: no key", on, "/debug/pprof/goroutine?debug=1", "", 401, ""},
		{"on: client key", on, "/debug/pprof/goroutine?debug=1", testKey, 403, ""},
		{"on: admin goroutines", on, "/debug/pprof/goroutine?debug=1", adminKey, 200, "goroutine profile"},
		{"on: admin index", on, "/debug/pprof", adminKey, 200, "heap"},
		{"on: admin heap", on, "/debug/pprof/heap?debug=1", adminKey, 200, "heap profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := tc.h.do(t, "GET", tc.path, tc.key, "")
			b := readAll(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(b, tc.body) {
				t.Errorf("%d %.200s, want %d containing %q", resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}
