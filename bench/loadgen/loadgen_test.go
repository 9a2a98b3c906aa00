package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/bench/mockupstream"
	"github.com/valyala/fasthttp"
)

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		count int
		last  time.Duration // for constant schedules
	}{
		{"constant by duration", Config{Rate: 100, Duration: time.Second}, 100, 990 * time.Millisecond},
		{"constant capped by requests", Config{Rate: 100, Duration: time.Second, Requests: 10}, 10, 90 * time.Millisecond},
		{"constant by requests only", Config{Rate: 1000, Requests: 5}, 5, 4 * time.Millisecond},
		{"poisson by duration", Config{Rate: 1000, Duration: time.Second, Arrival: Poisson, Seed: 7}, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Schedule(tc.cfg)
			if tc.count >= 0 && len(s) != tc.count {
				t.Fatalf("len = %d, want %d", len(s), tc.count)
			}
			for i := 1; i < len(s); i++ {
				if s[i] < s[i-1] {
					t.Fatalf("offset %d (%v) before offset %d (%v)", i, s[i], i-1, s[i-1])
				}
			}
			if tc.cfg.Duration > 0 && len(s) > 0 && s[len(s)-1] >= tc.cfg.Duration {
				t.Errorf("last offset %v is past the duration %v", s[len(s)-1], tc.cfg.Duration)
			}
			if tc.cfg.Arrival == Poisson {
				// The count is random but seeded: deterministic, and near Rate×Duration.
				if again := Schedule(tc.cfg); !cmp.Equal(s, again) {
					t.Error("poisson schedule differs between calls with one seed")
				}
				if len(s) < 800 || len(s) > 1200 {
					t.Errorf("len = %d, want about 1000", len(s))
				}
				return
			}
			if got := s[len(s)-1].Round(time.Microsecond); got != tc.last {
				t.Errorf("last offset = %v, want %v", got, tc.last)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Config{URL: "http://127.0.0.1:8080/v1/models", Rate: 10, Duration: time.Second}
	for _, tc := range []struct {
		name    string
		mutate  func(c *Config)
		wantErr bool
	}{
		{"valid", func(*Config) {}, false},
		{"localhost", func(c *Config) { c.URL = "http://localhost:1/x" }, false},
		{"ipv6 loopback", func(c *Config) { c.URL = "http://[::1]:1/x" }, false},
		{"remote host", func(c *Config) { c.URL = "http://example.com/x" }, true},
		{"private address", func(c *Config) { c.URL = "http://10.0.0.1:80/x" }, true},
		{"https", func(c *Config) { c.URL = "https://127.0.0.1/x" }, true},
		{"https with TLS", func(c *Config) { c.URL = "https://127.0.0.1:1/x"; c.TLS = &tls.Config{} }, false},
		{"http with TLS", func(c *Config) { c.TLS = &tls.Config{} }, true},
		{"remote host with TLS", func(c *Config) { c.URL = "https://example.com/x"; c.TLS = &tls.Config{} }, true},
		{"zero rate", func(c *Config) { c.Rate = 0 }, true},
		{"no bound", func(c *Config) { c.Duration = 0 }, true},
		{"bad arrival", func(c *Config) { c.Arrival = "bursty" }, true},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, true},
		{"huge schedule", func(c *Config) { c.Rate = 1e6; c.Duration = time.Hour }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestRunAgainstMock(t *testing.T) {
	up, err := mockupstream.Start(mockupstream.Config{Latency: time.Millisecond, Tokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	body := []byte(`{"model":"mock-llm","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`)
	for _, tc := range []struct {
		name   string
		stream bool
		body   []byte
	}{
		{"json", false, bytes.Replace(body, []byte(`"stream":true`), []byte(`"stream":false`), 1)},
		{"sse", true, body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Config{
				URL: up.URL + "/chat/completions", Body: tc.body, Stream: tc.stream,
				Header: map[string]string{"Content-Type": "application/json"},
				Rate:   200, Requests: 40, Arrival: Poisson, Seed: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != 40 || res.Errored() != 0 {
				t.Fatalf("ok %d, errors %v; want 40 ok", res.OK, res.Errors)
			}
			if res.Latency.Count != 40 || res.Latency.P50 < 1 || res.Latency.P99 < res.Latency.P50 {
				t.Errorf("latency summary not sane: %+v", res.Latency)
			}
			if tc.stream && (res.TTFT == nil || res.TTFT.Count != 40 || res.TTFT.P50 > res.Latency.Max) {
				t.Errorf("ttft summary not sane: %+v", res.TTFT)
			}
			if ms, frac := CDF(res.LatencyHistogram()); len(ms) == 0 || frac[len(frac)-1] != 1 {
				t.Errorf("CDF ends at %v, want 1", frac)
			}
		})
	}
}

func TestRunCountsErrorsByStatus(t *testing.T) {
	up, err := mockupstream.Start(mockupstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	res, err := Run(context.Background(), Config{
		URL: up.URL + "/chat/completions", Body: []byte(`{"model":"nope","messages":[{}]}`),
		Rate: 500, Requests: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res.Errors, map[string]int{"http_404": 10}); diff != "" {
		t.Errorf("errors (-got +want):\n%s", diff)
	}
}

func TestRunCountsOverloadWithoutWaiting(t *testing.T) {
	up, err := mockupstream.Start(mockupstream.Config{Latency: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	// Five requests due within 4 ms, one slot, a server that takes 500 ms:
	// the first is sent, the other four are counted, not queued.
	res, err := Run(context.Background(), Config{
		URL: up.URL + "/chat/completions", Body: []byte(`{"model":"mock-llm","messages":[{}]}`),
		Rate: 1000, Requests: 5, MaxInFlight: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 1 || res.OK != 1 || res.Errors[ErrOverload] != 4 {
		t.Errorf("sent %d ok %d errors %v; want 1 sent, 1 ok, 4 overload", res.Sent, res.OK, res.Errors)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	up, err := mockupstream.Start(mockupstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, Config{URL: up.URL + "/models", Rate: 10, Duration: time.Hour})
	if err == nil || res.Sent > 1 {
		t.Errorf("Run after cancel: sent %d, err %v; want at most 1 sent and an error", res.Sent, err)
	}
}

func FuzzReadSSE(f *testing.F) {
	for _, s := range []string{
		"data: {}\n\ndata: [DONE]\n\n",
		": keepalive\n\ndata: x\n\n",
		"data:[DONE]",
		"",
		"event: error\ndata: {\"error\":{}}\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var resp fasthttp.Response
		resp.SetBody(body)
		first, err := readSSE(&resp)
		if err == nil && first.IsZero() {
			t.Error("a stream accepted as complete has no first data line")
		}
	})
}
