package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// The situation: the gateway restarted and its workers have not yet
// re-registered (they do within a heartbeat or two). A client asking for
// a model that exists must hear "retry shortly" (503 + Retry-After), not
// "no such model" (404), which it would take as final. Outside the
// warm-up window, or for a model nobody knows, 404 stays.
func TestRestartWarmUp(t *testing.T) {
	notServed := func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		return apierr.NotFound("model", "model_not_found", "the model %q does not exist or no worker serves it", tk.Model)
	}
	h := newHarness(t, func(c *Config, d *Deps) {
		c.WarmUp = 20 * time.Second
		d.KnownModels = func() []string { return []string{"tiny"} }
	})
	h.disp.script = notServed
	body := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	for _, tc := range []struct {
		name       string
		advance    time.Duration
		model      string
		status     int
		code       string
		retryAfter string
	}{
		{"known model right after start", 0, "tiny", 503, "model_warming_up", "2"},
		{"known model later in the window", 15 * time.Second, "tiny", 503, "model_warming_up", "2"},
		{"known model at the window's last second", 4500 * time.Millisecond, "tiny", 503, "model_warming_up", "1"},
		{"unknown model in the window", 0, "nope", 404, "model_not_found", ""},
		{"known model after the window", 1 * time.Second, "tiny", 404, "model_not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.clock.Advance(tc.advance)
			resp := h.do(t, "POST", "/v1/chat/completions", testKey, body(tc.model))
			b := readAll(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(b, `"code":"`+tc.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tc.status, tc.code)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
}
