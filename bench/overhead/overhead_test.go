package overhead

import (
	"context"
	"testing"
	"time"
)

// TestRunSmoke runs the whole scenario briefly at a low rate: it must
// complete, serve every request both ways, and report sane numbers. It
// asserts no timing.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway, a worker and a mock upstream; skipped in -short")
	}
	res, err := Run(context.Background(), Config{
		Rates: []float64{100}, Duration: 500 * time.Millisecond, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 {
		t.Fatalf("got %d steps, want 2 (json and stream at one rate)", len(res.Steps))
	}
	for _, st := range res.Steps {
		t.Run(st.Mode, func(t *testing.T) {
			for _, ph := range []struct {
				name string
				ok   int
				errs int
			}{
				{"direct", st.Direct.OK, st.Direct.Errored()},
				{"through", st.Through.OK, st.Through.Errored()},
			} {
				if ph.ok == 0 || ph.errs != 0 {
					t.Errorf("%s: %d ok, %d errors (%v %v); want all ok", ph.name, ph.ok, ph.errs, st.Direct.Errors, st.Through.Errors)
				}
			}
			if st.Through.Latency.P50 <= 0 || st.Through.Latency.P99 < st.Through.Latency.P50 {
				t.Errorf("through latency not sane: %+v", st.Through.Latency)
			}
			if (st.Mode == ModeStream) != (st.AddedTTFT != nil) {
				t.Errorf("added TTFT = %v for mode %s", st.AddedTTFT, st.Mode)
			}
		})
	}
	if res.PeakRSSMiB <= 0 || res.Env.NumCPU <= 0 {
		t.Errorf("env not filled: rss %v, env %+v", res.PeakRSSMiB, res.Env)
	}
}
