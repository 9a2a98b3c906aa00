package gateway

import (
	"testing"
)

// A wrong method on a known route is 405 with Allow, not 404: a client (or
// an operator's curl) that sends GET to a POST-only worker route was told
// the route does not exist.
func TestWrongMethodIs405WithAllow(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		method, path, allow string
	}{
		{"GET", "/v1/workers/register", "POST"},
		{"GET", "/v1/workers/heartbeat", "POST"},
		{"PUT", "/v1/workers/challenge", "POST"},
		{"GET", "/v1/chat/completions", "POST"},
		{"DELETE", "/v1/embeddings", "POST"},
		{"POST", "/v1/models", "GET, HEAD"},
		{"POST", "/v1/models/tiny", "GET, HEAD"},
		{"POST", "/v1/receipts/r-1", "GET, HEAD"},
		{"POST", "/v1/zk/keys/k", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
		{"GET", "/v1/admin/models", "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp := h.do(t, tc.method, tc.path, testKey, "")
			b := readAll(t, resp)
			if resp.StatusCode != 405 || resp.Header.Get("Allow") != tc.allow {
				t.Errorf("%d Allow=%q %s, want 405 Allow=%q", resp.StatusCode, resp.Header.Get("Allow"), b, tc.allow)
			}
		})
	}
}
