package overhead

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/mockupstream"
)

// TestRunSmoke runs the whole scenario briefly at a low rate: it must
// complete, serve every request both ways, and report sane numbers. It
// asserts no timing.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway, a worker and a mock upstream; skipped in -short")
	}
	res, err := Run(context.Background(), Config{
		Rates: []float64{100}, Duration: 300 * time.Millisecond, Seed: 1,
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
	var md bytes.Buffer
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Non-streaming (JSON)", "Streaming (SSE)", "| 100 |", "Peak RSS"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	files, err := WritePlots(t.TempDir(), res)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Errorf("wrote %v, want 4 charts", files)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"zero is the default run", Config{}, false},
		{"ascending rates", Config{Rates: []float64{1, 2, 3}}, false},
		{"unsorted rates", Config{Rates: []float64{2, 1}}, true},
		{"zero rate", Config{Rates: []float64{0}}, true},
		{"negative duration", Config{Duration: -time.Second}, true},
		{"unknown mode", Config{Modes: []string{"grpc"}}, true},
		{"bad upstream", Config{Upstream: mockupstream.Config{Latency: -1}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestStepVerdicts(t *testing.T) {
	ok := &loadgen.Result{OK: 10}
	failed := &loadgen.Result{OK: 9, Errors: map[string]int{"http_503": 1}}
	for _, tc := range []struct {
		name       string
		step       Step
		wantPass   bool
		wantErrors string
	}{
		{"under target", Step{Direct: ok, Through: ok, Added: Added{P99: 0.5}}, true, "0"},
		{"noise below zero", Step{Direct: ok, Through: ok, Added: Added{P99: -0.2}}, true, "0"},
		{"over target", Step{Direct: ok, Through: ok, Added: Added{P99: 1.5}}, false, "0"},
		{"errors", Step{Direct: ok, Through: failed, Added: Added{P99: 0.1}}, false, "1 (through: http_503 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.step.Passed(); got != tc.wantPass {
				t.Errorf("Passed() = %v, want %v", got, tc.wantPass)
			}
			if got := errorText(tc.step); got != tc.wantErrors {
				t.Errorf("errorText() = %q, want %q", got, tc.wantErrors)
			}
		})
	}
}
