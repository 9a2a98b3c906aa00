package plot

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestChartsWritePNG(t *testing.T) {
	dir := t.TempDir()
	rates := []float64{500, 1000, 2000, 4000}
	for _, tc := range []struct {
		name string
		draw func(path string) error
	}{
		{"latency cdf", func(p string) error {
			return LatencyCDF(p, "Latency CDF", []Series{
				{Name: "direct", X: []float64{0.5, 1, 2, 4}, Y: []float64{0.1, 0.5, 0.9, 1}},
				{Name: "through tollgate", X: []float64{0.7, 1.3, 2.5, 5}, Y: []float64{0.1, 0.5, 0.9, 1}},
			})
		}},
		{"added latency", func(p string) error {
			return AddedLatency(p, "Added latency", []Series{
				{Name: "p50", X: rates, Y: []float64{0.1, 0.12, 0.2, 0.6}},
				{Name: "p99", X: rates, Y: []float64{0.3, 0.4, 0.8, 3}},
			}, 1)
		}},
		{"added latency all noise", func(p string) error {
			return AddedLatency(p, "Added latency", []Series{
				{Name: "p50", X: rates, Y: []float64{-0.05, -0.01, 0, -0.2}},
			}, 1)
		}},
		{"ttft by load", func(p string) error {
			return TTFTByLoad(p, "TTFT p99", "load (fraction of capacity)", []Series{
				{Name: "tollgate", X: []float64{0.5, 0.7, 0.9}, Y: []float64{80, 120, 300}},
				{Name: "round-robin", X: []float64{0.5, 0.7, 0.9}, Y: []float64{90, 200, 900}},
			}, 500)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "sub", tc.name+".png")
			if err := tc.draw(path); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg, err := png.DecodeConfig(f)
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if cfg.Width < 400 || cfg.Height < 200 {
				t.Errorf("image is %d×%d, want a readable size", cfg.Width, cfg.Height)
			}
		})
	}
}

func TestLinesRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Chart
	}{
		{"no series", Chart{}},
		{"mismatched lengths", Chart{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}},
		{"nothing drawable on log axes", Chart{LogX: true, Series: []Series{{Name: "a", X: []float64{0, -1}, Y: []float64{1, 2}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Lines(filepath.Join(t.TempDir(), "x.png"), tc.c); err == nil {
				t.Error("Lines() = nil, want an error")
			}
		})
	}
}
