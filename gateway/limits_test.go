package gateway

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestRateLimits(t *testing.T) {
	const chat = `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`
	type call struct {
		advance    time.Duration // fake clock moves first
		wantStatus int
		wantRetry  string // Retry-After on a 429
	}
	tests := []struct {
		name     string
		rpm, tpm int64
		calls    []call
	}{
		{"unlimited", 0, 0, []call{{0, 200, ""}, {0, 200, ""}, {0, 200, ""}}},
		{"requests per minute", 2, 0, []call{
			{0, 200, ""}, {0, 200, ""},
			{0, 429, "30"},              // one unit refills in 30 s
			{30 * time.Second, 200, ""}, // and then fits
			{0, 429, "30"},
		}},
		// The echo engine uses 7 tokens (5 prompt + 2 completion) a request.
		{"tokens per minute, charged after the fact", 0, 10, []call{
			{0, 200, ""},                // 10 → 3
			{0, 200, ""},                // admitted with 3 left; charged into debt: -4
			{0, 429, "24"},              // 4 tokens of debt at 10/min: 24 s
			{24 * time.Second, 200, ""}, // debt repaid
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config, _ *Deps) {
				c.APIKeys[0].RequestsPerMinute, c.APIKeys[0].TokensPerMinute = tc.rpm, tc.tpm
			})
			for i, c := range tc.calls {
				h.clock.Advance(c.advance)
				resp := h.do(t, "POST", "/v1/chat/completions", testKey, chat)
				body := readAll(t, resp)
				if resp.StatusCode != c.wantStatus {
					t.Fatalf("call %d: status %d, want %d: %s", i, resp.StatusCode, c.wantStatus, body)
				}
				if c.wantStatus != 429 {
					continue
				}
				if got := resp.Header.Get("Retry-After"); got != c.wantRetry {
					t.Errorf("call %d: Retry-After %q, want %q", i, got, c.wantRetry)
				}
				var e struct {
					Error struct{ Type, Code string }
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Type != "rate_limit_error" || e.Error.Code != "rate_limit_exceeded" {
					t.Errorf("call %d: error body %s (%v)", i, body, err)
				}
			}
		})
	}
}

func TestReadinessChecks(t *testing.T) {
	var down error
	h := newHarness(t, func(_ *Config, d *Deps) {
		d.Readiness = []func() error{func() error { return down }}
	})
	if resp := h.do(t, "GET", "/readyz", "", ""); resp.StatusCode != 200 {
		t.Fatalf("readyz %d while healthy", resp.StatusCode)
	}
	down = errors.New("redis unreachable")
	resp := h.do(t, "GET", "/readyz", "", "")
	if body := readAll(t, resp); resp.StatusCode != 503 || !json.Valid([]byte(body)) {
		t.Errorf("readyz while degraded: %d %s", resp.StatusCode, body)
	}
	// Degraded is not down: requests are still served.
	if resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Errorf("chat while degraded: %d", resp.StatusCode)
	}
}
