package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
)

// Policies a Config may name. Round-robin and least-request are the
// baselines the bench compares against: same filters and batcher, a
// different pick and no latency-based admission.
const (
	PolicyTollgate     = "tollgate"      // filters → weighted scorers → max-score picker, with admission
	PolicyRoundRobin   = "round-robin"   // next candidate in turn
	PolicyLeastRequest = "least-request" // fewest tasks assigned (queued + in flight)
)

// Scorer names a Config may list.
const (
	ScorerTTFT     = "ttft"
	ScorerQueue    = "queue"
	ScorerKVCache  = "kv-cache"
	ScorerAffinity = "affinity"
)

// PluginConfig enables one scorer with a weight.
type PluginConfig struct {
	Name   string  `yaml:"name" json:"name"`
	Weight float64 `yaml:"weight" json:"weight"`
}

// Config is the scheduler's section of the config file. Durations are YAML
// strings ("3s", "250ms"). Zero fields take the defaults noted.
type Config struct {
	// Policy is tollgate (default), round-robin or least-request.
	Policy string `yaml:"policy" json:"policy"`
	// Scorers are the weighted scorers of the tollgate policy (default
	// ttft:4, queue:1, kv-cache:1, affinity:1).
	Scorers []PluginConfig `yaml:"scorers" json:"scorers"`
	// Batching bounds each worker's batcher.
	Batching batching.Config `yaml:"batching" json:"batching"`

	// HeartbeatTimeout takes a silent worker out of rotation (default 3s).
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout" json:"heartbeat_timeout"`
	// TelemetryStale is the heartbeat age after which a worker's telemetry
	// counts as saturated (default 1.5s).
	TelemetryStale time.Duration `yaml:"telemetry_stale" json:"telemetry_stale"`
	// DefaultMaxConcurrency is a worker's slot count when it registers none (default 8).
	DefaultMaxConcurrency int `yaml:"default_max_concurrency" json:"default_max_concurrency"`
	// ExpectedOutputTokens estimates a task's output when it sets no
	// max_tokens, and caps the estimate when it does (default 256).
	ExpectedOutputTokens int `yaml:"expected_output_tokens" json:"expected_output_tokens"`

	// Shed rejects an interactive task at once (429) when no worker's
	// predicted TTFT meets its deadline (default true; batch-class tasks are
	// queued instead).
	Shed *bool `yaml:"shed" json:"shed"`
	// EjectBase and EjectMax bound the exponential back-off of a worker
	// ejected after a failure (defaults 1s and 60s).
	EjectBase time.Duration `yaml:"eject_base" json:"eject_base"`
	EjectMax  time.Duration `yaml:"eject_max" json:"eject_max"`
	// StopGrace is how long a task stopped on its worker (its client went
	// away, or its deadline passed) is waited for: the worker then ends it
	// with the record of the tokens it generated, which Dispatch delivers
	// (default 5s). Past it the call ends without one.
	StopGrace time.Duration `yaml:"stop_grace" json:"stop_grace"`

	// AffinityLoad is the load (assigned ÷ slots) above which the affinity
	// scorer yields a task's preferred worker to the next one (default 0.8).
	AffinityLoad float64 `yaml:"affinity_load" json:"affinity_load"`
	// AffinityPrefix is how many bytes of the prompt's start key affinity (default 512).
	AffinityPrefix int `yaml:"affinity_prefix" json:"affinity_prefix"`

	// Pins pins a model name to one weights digest: only workers serving
	// that version get its tasks.
	Pins map[string]string `yaml:"pins" json:"pins"`

	// Prior latency of a worker not yet measured (defaults 20ms, 100µs, 15ms).
	PriorOverhead   time.Duration `yaml:"prior_overhead" json:"prior_overhead"`
	PriorPerToken   time.Duration `yaml:"prior_prefill_per_token" json:"prior_prefill_per_token"`
	PriorInterToken time.Duration `yaml:"prior_inter_token" json:"prior_inter_token"`
	// EWMAAlpha weighs each new latency observation (default 0.2).
	EWMAAlpha float64 `yaml:"ewma_alpha" json:"ewma_alpha"`
}

// DefaultScorers are the tollgate policy's scorers when none are configured.
func DefaultScorers() []PluginConfig {
	return []PluginConfig{{ScorerTTFT, 4}, {ScorerQueue, 1}, {ScorerKVCache, 1}, {ScorerAffinity, 1}}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.Policy == "" {
		c.Policy = PolicyTollgate
	}
	if c.Scorers == nil {
		c.Scorers = DefaultScorers()
	}
	c.Batching = c.Batching.Defaults()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, 3*time.Second)
	def(&c.TelemetryStale, 1500*time.Millisecond)
	def(&c.EjectBase, time.Second)
	def(&c.EjectMax, time.Minute)
	def(&c.StopGrace, 5*time.Second)
	def(&c.PriorOverhead, 20*time.Millisecond)
	def(&c.PriorPerToken, 100*time.Microsecond)
	def(&c.PriorInterToken, 15*time.Millisecond)
	if c.DefaultMaxConcurrency == 0 {
		c.DefaultMaxConcurrency = 8
	}
	if c.ExpectedOutputTokens == 0 {
		c.ExpectedOutputTokens = 256
	}
	if c.Shed == nil {
		t := true
		c.Shed = &t
	}
	if c.AffinityLoad == 0 {
		c.AffinityLoad = 0.8
	}
	if c.AffinityPrefix == 0 {
		c.AffinityPrefix = 512
	}
	if c.EWMAAlpha == 0 {
		c.EWMAAlpha = 0.2
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch c.Policy {
	case "", PolicyTollgate, PolicyRoundRobin, PolicyLeastRequest:
	default:
		return fmt.Errorf("scheduler.policy: unknown policy %q (want %s, %s or %s)", c.Policy, PolicyTollgate, PolicyRoundRobin, PolicyLeastRequest)
	}
	seen := map[string]bool{}
	for i, p := range c.Scorers {
		if _, ok := scorerFactories[p.Name]; !ok {
			return fmt.Errorf("scheduler.scorers[%d].name: unknown scorer %q (want one of %s)", i, p.Name, strings.Join(scorerNames(), ", "))
		}
		if seen[p.Name] {
			return fmt.Errorf("scheduler.scorers[%d].name: scorer %q listed twice", i, p.Name)
		}
		seen[p.Name] = true
		if p.Weight < 0 || p.Weight > 1000 {
			return fmt.Errorf("scheduler.scorers[%d].weight: must be in [0, 1000], got %v", i, p.Weight)
		}
	}
	if err := c.Batching.Validate(); err != nil {
		return fmt.Errorf("scheduler.batching.%w", err)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"heartbeat_timeout", c.HeartbeatTimeout}, {"telemetry_stale", c.TelemetryStale},
		{"eject_base", c.EjectBase}, {"eject_max", c.EjectMax}, {"stop_grace", c.StopGrace},
		{"prior_overhead", c.PriorOverhead}, {"prior_prefill_per_token", c.PriorPerToken}, {"prior_inter_token", c.PriorInterToken},
	} {
		if f.d < 0 {
			return fmt.Errorf("scheduler.%s: must not be negative, got %s", f.name, f.d)
		}
	}
	switch {
	case c.HeartbeatTimeout != 0 && c.TelemetryStale > c.HeartbeatTimeout:
		return fmt.Errorf("scheduler.telemetry_stale: must not exceed heartbeat_timeout (%s > %s)", c.TelemetryStale, c.HeartbeatTimeout)
	case c.EjectMax != 0 && c.EjectBase > c.EjectMax:
		return fmt.Errorf("scheduler.eject_base: must not exceed eject_max (%s > %s)", c.EjectBase, c.EjectMax)
	case c.DefaultMaxConcurrency < 0:
		return fmt.Errorf("scheduler.default_max_concurrency: must be positive, got %d", c.DefaultMaxConcurrency)
	case c.ExpectedOutputTokens < 0:
		return fmt.Errorf("scheduler.expected_output_tokens: must be positive, got %d", c.ExpectedOutputTokens)
	case c.AffinityLoad < 0 || c.AffinityLoad > 10:
		return fmt.Errorf("scheduler.affinity_load: must be in [0, 10], got %v", c.AffinityLoad)
	case c.AffinityPrefix < 0:
		return fmt.Errorf("scheduler.affinity_prefix: must be positive, got %d", c.AffinityPrefix)
	case c.EWMAAlpha < 0 || c.EWMAAlpha > 1:
		return fmt.Errorf("scheduler.ewma_alpha: must be in (0, 1], got %v", c.EWMAAlpha)
	}
	for name, d := range c.Pins {
		if name == "" || !isHexDigest(d) {
			return fmt.Errorf("scheduler.pins[%q]: want a model name and a 64-char lowercase hex digest, got %q", name, d)
		}
	}
	return nil
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
