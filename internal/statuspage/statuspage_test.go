package statuspage

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

var now = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func sample() Snapshot {
	return Snapshot{
		Now: now, Version: "v0.1.0-dev",
		Workers: []Worker{
			{ID: "wrk_7f3a9c", URL: "http://10.0.0.5:9090", Healthy: true, LastHeartbeat: now.Add(-400 * time.Millisecond),
				InFlight: 6, MaxConcurrency: 8, Queued: 2, Models: []string{"llama3-8b"},
				Load: task.Load{Waiting: 3, Running: 6, KVCacheUsage: 0.62, Source: "vllm"},
				GPUs: []task.GPU{{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryTotalMiB: 81559, MemoryUsedMiB: 70211, GPUUtilPct: 93, TemperatureC: 61, PowerW: 612.4}}},
			{ID: "wrk_b21e04", URL: "http://10.0.0.6:9090", Healthy: false, LastHeartbeat: now.Add(-7 * time.Second),
				MaxConcurrency: 4, Models: []string{"llama3-8b", "embed-small"},
				Load: task.Load{Running: 1, Source: "llamacpp", Unknown: []string{"kv_cache_usage"}}},
			{ID: "wrk_<script>alert(1)</script>", URL: "http://x", Draining: true, Healthy: true, MaxConcurrency: 1},
		},
		Models: []task.ModelVersion{
			{Name: "llama3-8b", Digest: strings.Repeat("ab", 32), ContextLength: 8192},
			{Name: "embed-small", Digest: strings.Repeat("cd", 32), Embeddings: true},
		},
		Load:     Load{QueueLength: 2, InFlight: 6},
		Requests: Requests{Window: time.Minute, RatePerSec: 42.5, ErrorRate: 0.012, LatencyP50: 1800 * time.Millisecond, LatencyP95: 4200 * time.Millisecond, TTFTP50: 95 * time.Millisecond, TTFTP95: 310 * time.Millisecond},
		Receipts: Receipts{Enabled: true, Pending: 128, Proven: 90412, Failed: 3, OldestPending: 95 * time.Second},
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		snap    Snapshot
		want    []string
		notWant []string
	}{
		{"full", sample(),
			[]string{"2 / 3", "NVIDIA H100 80GB HBM3", "70211/81559 MiB", "86.1%", "400.0ms ago", "7.00s ago", "42.50", "1.80s", "95.0ms",
				"Receipts pending", "128", "oldest 1m35s", "llama3-8b", "generation, embeddings", "KV cache 62.0%", "not reported: kv_cache_usage", "+2 queued", "draining",
				"&lt;script&gt;alert(1)&lt;/script&gt;", "width: 75%"},
			[]string{"<script>", "refresh"}},
		{"empty", Snapshot{Now: now, RefreshSeconds: 5},
			[]string{"No workers registered.", "No model is served", `content="5"`},
			[]string{"Receipts pending"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Render(&buf, tc.snap); err != nil {
				t.Fatal(err)
			}
			html := buf.String()
			for _, w := range tc.want {
				if !strings.Contains(html, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(html, w) {
					t.Errorf("page contains %q", w)
				}
			}
		})
	}
}

func TestDur(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0"}, {-time.Second, "0"}, {850 * time.Microsecond, "850µs"}, {12300 * time.Microsecond, "12.3ms"},
		{1240 * time.Millisecond, "1.24s"}, {185 * time.Second, "3m05s"}, {26 * time.Hour, "26h00m"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := dur(tc.in); got != tc.want {
				t.Errorf("dur(%v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestScreenshot renders the page in headless Chromium and checks the
// screenshot. Set STATUSPAGE_SCREENSHOT=path to keep the PNG.
func TestScreenshot(t *testing.T) {
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium is not installed (apt-get install chromium); skipping the screenshot check")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := Render(w, sample()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	defer srv.Close()

	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--screenshot="+shot, "--window-size=1280,900", srv.URL)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() < 20_000 {
		t.Errorf("screenshot is %d bytes; a rendered page should be larger", st.Size())
	}
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot is %v, want 1280x900", b)
	}
	// Not a blank page: count distinct colours in a coarse sample.
	colours := map[[3]uint32]bool{}
	for y := 0; y < 900; y += 7 {
		for x := 0; x < 1280; x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 12, g >> 12, b >> 12}] = true
		}
	}
	if len(colours) < 8 {
		t.Errorf("screenshot has %d distinct colours; the page looks blank", len(colours))
	}
	if keep := os.Getenv("STATUSPAGE_SCREENSHOT"); keep != "" {
		data, _ := os.ReadFile(shot)
		if err := os.WriteFile(keep, data, 0o644); err != nil {
			t.Error(err)
		}
	}
}
