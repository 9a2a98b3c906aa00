package obs

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// A prover that cannot reach a worker logs the same ERROR three times a
// second (1,876 lines in 10 minutes in the soak). Behind the limiter: the
// first line, then one a minute carrying how many were held back, per
// worker; other workers' and lower-level lines pass.
func TestRepeatLimit(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	logger := LimitRepeats(base, RepeatLimit{Interval: time.Minute, Keys: []string{"worker"}, Clock: clk})
	w1 := logger.With("worker", "w1")
	for i := range 600 { // 200 s at 3 a second (1/3 s is 333,333,333 ns: a minute is 181 steps)
		w1.Error("batch not proven", "batch", i)
		logger.Error("batch not proven", "worker", "w2", "batch", i)
		if i%3 == 0 {
			logger.Info("proving key loaded")
		}
		clk.Advance(time.Second / 3)
	}
	clk.Advance(2 * time.Minute) // quiet: w1 recovers, then fails again
	w1.Error("batch not proven", "batch", 999)

	var got []string
	info := 0
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, "proving key loaded") {
			info++
			continue
		}
		got = append(got, l)
	}
	want := []string{
		`level=ERROR msg="batch not proven" worker=w1 batch=0`,
		`level=ERROR msg="batch not proven" worker=w2 batch=0`,
		`level=ERROR msg="batch not proven" worker=w1 batch=181 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w2 batch=181 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w1 batch=362 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w2 batch=362 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w1 batch=543 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w2 batch=543 repeats=180`,
		`level=ERROR msg="batch not proven" worker=w1 batch=999`,
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if info != 200 {
		t.Errorf("%d info lines, want all 200 (below the limited level)", info)
	}
}

func TestRepeatLimitBounded(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	var buf bytes.Buffer
	h := NewRepeatLimitHandler(slog.NewTextHandler(&buf, nil), RepeatLimit{Keys: []string{"worker"}, Clock: clk, MaxStreams: 10})
	logger := slog.New(h)
	for i := range 100 {
		logger.Warn("unreachable", "worker", i)
	}
	if n := len(h.st.streams); n != 10 {
		t.Errorf("%d streams remembered, want the bound 10", n)
	}
	if n := strings.Count(buf.String(), "\n"); n != 100 {
		t.Errorf("%d lines, want 100 (distinct streams all pass)", n)
	}
}
