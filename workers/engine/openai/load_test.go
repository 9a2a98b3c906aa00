package openai

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

var loadCases = []struct {
	name    string
	text    string
	want    task.Load
	wantErr bool
}{
	{
		name: "vllm two engines",
		text: `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B"} 4.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B"} 0.5
vllm:num_preemptions_total{engine="0",model_name="meta-llama/Llama-3.1-8B"} 9.0
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="x"} 0.0
`,
		want: task.Load{Source: "vllm", Waiting: 5, Running: 5, KVCacheUsage: 0.5},
	},
	{
		name: "old vllm cache name with timestamp",
		text: "vllm:num_requests_running{model_name=\"m\"} 1 1700000000000\nvllm:num_requests_waiting{model_name=\"m\"} 0\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.75\n",
		want: task.Load{Source: "vllm", Running: 1, KVCacheUsage: 0.75},
	},
	{
		name: "sglang",
		text: "sglang:num_running_reqs{model_name=\"q\",tp_rank=\"0\"} 7\nsglang:num_queue_reqs{model_name=\"q\",tp_rank=\"0\"} 12\nsglang:token_usage{model_name=\"q\",tp_rank=\"0\"} 0.9\n",
		want: task.Load{Source: "sglang", Running: 7, Waiting: 12, KVCacheUsage: 0.9},
	},
	{
		name: "label values with braces, quotes and spaces",
		text: `vllm:num_requests_running{model_name="a} \"b\" {c",engine="0"} 2` + "\n",
		want: task.Load{Source: "vllm", Running: 2, Unknown: []string{"waiting", "kv_cache_usage"}},
	},
	{
		name: "llama.cpp with the KV-cache gauge",
		text: "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 4\nllamacpp:requests_deferred 46\nllamacpp:kv_cache_usage_ratio 0.62\nllamacpp:n_busy_slots_per_decode 3.87\n",
		want: task.Load{Source: "llamacpp", Running: 4, Waiting: 46, KVCacheUsage: 0.62},
	},
	{
		name: "llama.cpp without it says so",
		text: "llamacpp:prompt_tokens_seconds 812.5\nllamacpp:predicted_tokens_seconds 128.5\nllamacpp:requests_processing 1\nllamacpp:requests_deferred 0\n",
		want: task.Load{Source: "llamacpp", Running: 1, Unknown: []string{"kv_cache_usage"}},
	},
	{
		name: "NaN, negative and garbage lines are skipped",
		text: "vllm:num_requests_running NaN\nvllm:num_requests_running -3\nvllm:num_requests_running{ 1\nvllm:num_requests_waiting 2\n",
		want: task.Load{Source: "vllm", Waiting: 2, Unknown: []string{"running", "kv_cache_usage"}},
	},
	{name: "no known gauges", text: "process_cpu_seconds_total 12\n", wantErr: true},
	{name: "empty", text: "", wantErr: true},
}

func TestParseLoad(t *testing.T) {
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLoad(strings.NewReader(tc.text))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseLoad(f *testing.F) {
	for _, tc := range loadCases {
		f.Add(tc.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		l, err := parseLoad(strings.NewReader(text))
		if err != nil {
			return
		}
		if l.Waiting < 0 || l.Running < 0 || l.KVCacheUsage < 0 || l.KVCacheUsage > 1 || l.Source == "" {
			t.Fatalf("implausible load %+v", l)
		}
	})
}

func TestLoadScrape(t *testing.T) {
	tests := []struct {
		name   string
		flavor string
		want   task.Load
	}{
		{"vllm", "vllm", task.Load{Source: "vllm", Waiting: 3, Running: 2, KVCacheUsage: 0.4}},
		{"sglang", "sglang", task.Load{Source: "sglang", Waiting: 3, Running: 2, KVCacheUsage: 0.4}},
		{"llama.cpp", "llamacpp", task.Load{Source: "llamacpp", Waiting: 3, Running: 2, Unknown: []string{"kv_cache_usage"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := upstreamtest.Start(upstreamtest.Config{Flavor: tc.flavor})
			defer up.Close()
			up.SetLoad(3, 2, 0.4)
			clk := clock.NewFake(time.Unix(1_700_000_000, 0))
			e := newEngine(t, up, func(c *Config) { c.Clock, c.MetricsTTL = clk, time.Second })
			ctx := context.Background()
			for i := 0; i < 3; i++ {
				got, err := e.Load(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Fatalf("(-want +got):\n%s", diff)
				}
			}
			if n := up.Stats().Scrapes; n != 1 {
				t.Fatalf("%d scrapes within the TTL, want 1", n)
			}
			up.SetLoad(0, 1, 0.1)
			clk.Advance(time.Second)
			got, err := e.Load(ctx)
			if err != nil || got.Running != 1 || up.Stats().Scrapes != 2 {
				t.Fatalf("after TTL: %+v, %v, %d scrapes", got, err, up.Stats().Scrapes)
			}
		})
	}
}

func TestLoadUnavailable(t *testing.T) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	tests := []struct {
		name       string
		metricsURL string
		wantCode   string
	}{
		{"off", MetricsOff, "metrics_off"},
		{"404 (Ollama has no /metrics)", up.URL + "/no-metrics-here", "metrics_unavailable"},
		{"no load gauges", up.URL + "/models", "metrics_unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, up, func(c *Config) { c.MetricsURL = tc.metricsURL })
			_, err := e.Load(context.Background())
			checkAPIErr(t, err, 503, tc.wantCode)
		})
	}
}
