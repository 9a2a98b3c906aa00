package proving

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/zk"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Config)
		wantIn string // "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"no capacities", func(c *Config) { c.Capacities = nil }, "capacities"},
		{"unknown capacity", func(c *Config) { c.Capacities = []int{8, 32} }, "capacities"},
		{"no key dir", func(c *Config) { c.KeyDir = "" }, "key_dir"},
		{"no proofs", func(c *Config) { c.Proofs = 0 }, "proofs"},
		{"no verifies", func(c *Config) { c.Verifies = 0 }, "verifies"},
		{"negative latency receipts", func(c *Config) { c.LatencyReceipts = -1 }, "latency_receipts"},
		{"latency skipped", func(c *Config) { c.LatencyReceipts = 0 }, ""},
		{"zero max age", func(c *Config) { c.MaxAge = 0 }, "max_age"},
		{"long interval", func(c *Config) { c.Interval = time.Hour }, "interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			switch {
			case tc.wantIn == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.wantIn != "" && (err == nil || !strings.Contains(err.Error(), tc.wantIn)):
				t.Fatalf("error %v, want one naming %q", err, tc.wantIn)
			}
		})
	}
}

// TestRunSmallest runs the bench at capacity 8 once, through the pipeline
// too, and renders it: the table, the JSON-able result and real PNGs.
func TestRunSmallest(t *testing.T) {
	if testing.Short() {
		t.Skip("proves a batch")
	}
	cfg := DefaultConfig()
	cfg.Capacities, cfg.Proofs, cfg.Verifies = []int{8}, 1, 1
	cfg.LatencyReceipts, cfg.MaxAge, cfg.Interval = 2, 10*time.Millisecond, 10*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Capacities[0]
	cs, err := zk.Compile(8)
	if err != nil {
		t.Fatal(err)
	}
	if c.Constraints != cs.GetNbConstraints() || c.ProveSeconds <= 0 || c.ReceiptsPerSecond <= 0 || c.ProofBytes == 0 || c.VerifyMilliseconds <= 0 {
		t.Errorf("capacity 8 figures not filled: %+v", c)
	}
	if l := res.Latency; l == nil || len(l.Samples) != 2 || l.BatchCapacity != 8 || l.P50Seconds <= 0 {
		t.Errorf("latency not measured: %+v", res.Latency)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| 8 |", "constraints/receipt", "response → proven"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	dir := t.TempDir()
	files, err := WritePlots(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("plots %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG")) || filepath.Dir(f) != dir {
			t.Errorf("%s is not a PNG in %s", f, dir)
		}
	}
}

func TestRenderEmpty(t *testing.T) {
	if err := WriteMarkdown(&bytes.Buffer{}, &Result{}); err != ErrEmpty {
		t.Errorf("WriteMarkdown of nothing: %v", err)
	}
	if _, err := WritePlots(t.TempDir(), &Result{}); err != ErrEmpty {
		t.Errorf("WritePlots of nothing: %v", err)
	}
}
