package openai

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// loadFamily names one server's load gauges.
type loadFamily struct {
	source  string
	waiting string
	running string
	usage   []string // KV-cache use, 0..1; alternatives in order of preference
}

var loadFamilies = []loadFamily{
	{"vllm", "vllm:num_requests_waiting", "vllm:num_requests_running",
		[]string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}},
	{"sglang", "sglang:num_queue_reqs", "sglang:num_running_reqs", []string{"sglang:token_usage"}},
	// llama-server --metrics: requests deferred wait for a free slot; not
	// every build exports the KV-cache gauge.
	{"llamacpp", "llamacpp:requests_deferred", "llamacpp:requests_processing", []string{"llamacpp:kv_cache_usage_ratio"}},
}

var errNoLoadMetrics = errors.New("no vLLM, SGLang or llama.cpp load gauges in the metrics (llama-server needs --metrics)")

// parseLoad reads Prometheus text exposition and returns the load it finds.
// Waiting and running are summed over all label sets (several engines or
// data-parallel ranks); KV-cache use is the highest of them, as a fraction
// cannot be summed and the fullest cache is the one that stalls.
func parseLoad(r io.Reader) (task.Load, error) {
	samples := map[string][]float64{}
	wanted := map[string]bool{}
	for _, f := range loadFamilies {
		wanted[f.waiting], wanted[f.running] = true, true
		for _, u := range f.usage {
			wanted[u] = true
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := parseSample(sc.Text())
		if !ok || !wanted[name] {
			continue
		}
		samples[name] = append(samples[name], value)
	}
	if err := sc.Err(); err != nil {
		return task.Load{}, fmt.Errorf("reading metrics: %w", err)
	}
	for _, f := range loadFamilies {
		w, okW := samples[f.waiting]
		run, okR := samples[f.running]
		if !okW && !okR {
			continue
		}
		l := task.Load{Source: f.source, Waiting: sumCount(w), Running: sumCount(run)}
		if !okW {
			l.Unknown = append(l.Unknown, "waiting")
		}
		if !okR {
			l.Unknown = append(l.Unknown, "running")
		}
		usage := false
		for _, name := range f.usage {
			if u, ok := samples[name]; ok {
				for _, v := range u {
					l.KVCacheUsage = math.Max(l.KVCacheUsage, math.Min(v, 1))
				}
				usage = true
				break
			}
		}
		if !usage {
			l.Unknown = append(l.Unknown, "kv_cache_usage")
		}
		return l, nil
	}
	return task.Load{}, errNoLoadMetrics
}

func sumCount(vs []float64) int {
	var s float64
	for _, v := range vs {
		s += v
	}
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(math.Round(s))
}

// parseSample reads one exposition line: name{labels} value [timestamp].
// Comments, malformed lines and non-finite or negative values give ok=false.
func parseSample(line string) (name string, value float64, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", 0, false
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		end := labelsEnd(rest)
		if end < 0 {
			return "", 0, false
		}
		rest = rest[end+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || len(fields) > 2 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return "", 0, false
	}
	return name, v, true
}

// labelsEnd is the index of the '}' closing the label set that s starts
// with, skipping quoted values and their escapes; -1 if there is none.
func labelsEnd(s string) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i
		}
	}
	return -1
}

// Load scrapes the upstream's Prometheus endpoint for its queue and cache
// use. A scrape (or its failure) is reused for Config.MetricsTTL, so a burst
// of heartbeats costs one request.
func (e *Engine) Load(ctx context.Context) (task.Load, error) {
	if e.metricsURL == "" {
		return task.Load{}, apierr.Unavailable("metrics_off", "load scraping is off for this engine", nil)
	}
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	now := e.clock.Now()
	if e.loadOnce && now.Before(e.loadAt.Add(e.cfg.MetricsTTL)) {
		return e.load, e.loadErr
	}
	e.load, e.loadErr = e.scrapeLocked(ctx)
	e.loadAt, e.loadOnce = now, true
	return e.load, e.loadErr
}

func (e *Engine) scrapeLocked(ctx context.Context) (task.Load, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := e.clock.AfterFunc(e.cfg.HeaderTimeout, func() { cancel(errHeaderTimeout) })
	defer timer.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.metricsURL, nil)
	if err != nil {
		return task.Load{}, apierr.Internal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return task.Load{}, apierr.Unavailable("metrics_unavailable", "the upstream's metrics endpoint is unreachable", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return task.Load{}, apierr.Unavailable("metrics_unavailable",
			fmt.Sprintf("the upstream's metrics endpoint answered %d", resp.StatusCode), nil)
	}
	l, err := parseLoad(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return task.Load{}, apierr.Unavailable("metrics_unavailable", "the upstream's metrics carry no load gauges", err)
	}
	return l, nil
}
