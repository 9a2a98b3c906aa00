// Package config is Tollgate's one configuration file: a documented YAML
// struct for the gateway (listen address, data directory, keys, limits,
// registration, timeouts) with the scheduler's section embedded as
// scheduler.Config. Durations are strings ("250ms", "10m"). Load decodes
// strictly (unknown fields fail) and Validate names the first bad field.
// Secrets (API, admin and provider keys) are never logged or rendered by
// String.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/cors"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"gopkg.in/yaml.v3"
)

// Config is the whole file. Example (every field optional):
//
//	listen: 127.0.0.1:8080
//	data_dir: ./data
//	body_limit_bytes: 4194304
//	api_keys:
//	  - id: team-a            # subject recorded in receipts
//	    key: sk-...            # bearer secret
//	    deadline: 2m           # default request deadline
//	    priority: interactive  # or batch
//	    requests_per_minute: 600   # 0: unlimited
//	    tokens_per_minute: 200000  # 0: unlimited
//	  - {id: billing, key: sk-..., role: billing}  # reads every receipt, makes no requests
//	    audit: false           # may re-send prompts to another provider (default off; on for `tollgate dev`'s key)
//	admin_keys: [sk-admin-...]
//	provider_tokens: [pt-at-least-16-chars]
//	open_registration: false
//	models:
//	  - {name: llama3-8b, digest: <64 hex>, context_length: 8192}
//	limits: {max_tokens: 131072, max_messages: 4096, max_inputs: 2048}
//	timeouts: {default_deadline: 10m, keepalive: 15s, read: 30s, idle: 120s, shutdown: 30s}
//	log: {level: info, format: text}
//	scheduler: {policy: tollgate, heartbeat_timeout: 3s}
//	records:                  # how workers' completion records are checked
//	  clock_skew: 30s
//	  bounds: {completion_tokens_per_byte: 1, completion_slack: 16,
//	           prompt_tokens_per_byte: 1, prompt_tokens_per_message: 8, prompt_slack: 64}
//	  models:
//	    deepseek-r1: {hidden_completion: true}   # reasoning tokens leave no text
//	redis:
//	  url: redis://127.0.0.1:6379/0   # empty: embedded stores, one gateway
//	  prefix: "{tollgate}:"
//	  worker_ttl: 10s
//	  claim_idle: 30s
//	audit: {enabled: true, rate: 0.01, max_share: 0.05, queue: 256, concurrency: 2, timeout: 5m}
//	responses: {enabled: true, ttl: 720h, max_responses: 100000, max_bytes: 4194304}   # /v1/responses store
//	cors:                     # browser pages on other origins (default off)
//	  allowed_origins: [https://app.example.com, http://localhost:5173]   # or ["*"]
//	  allowed_headers: [X-My-Header]   # beyond the built-in list
//	  allow_credentials: false         # never with "*"
//	  max_age: 10m                     # preflight cache
type Config struct {
	// Listen is the gateway's address (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// DataDir holds the embedded stores (default ./data).
	DataDir string `yaml:"data_dir"`
	// BodyLimitBytes is the largest request body (default 4 MiB).
	BodyLimitBytes int `yaml:"body_limit_bytes"`
	// APIKeys are the client keys.
	APIKeys []APIKey `yaml:"api_keys"`
	// AdminKeys open /v1/workers and /v1/admin/*.
	AdminKeys []string `yaml:"admin_keys"`
	// MaxPendingAge fails /readyz while the oldest receipt not yet proven
	// or failed is older than this (0: off). The age is exported as
	// tollgate_receipts_oldest_pending_age_seconds either way.
	MaxPendingAge Duration `yaml:"max_pending_age"`
	// Pprof serves Go's runtime profiles under /debug/pprof on the API
	// listener, to admin keys only (off by default; flag --pprof).
	Pprof bool `yaml:"pprof"`
	// ProviderTokens are what workers present to register.
	ProviderTokens []string `yaml:"provider_tokens"`
	// OpenRegistration accepts any model version a worker names; otherwise
	// only Models (and those added with POST /v1/admin/models).
	OpenRegistration bool `yaml:"open_registration"`
	// Models is the registration allow-list.
	Models []Model `yaml:"models"`
	// Limits bound request parameters.
	Limits Limits `yaml:"limits"`
	// Timeouts of the front door.
	Timeouts Timeouts `yaml:"timeouts"`
	// Log configures log/slog.
	Log Log `yaml:"log"`
	// Scheduler is the scheduler's section.
	Scheduler scheduler.Config `yaml:"scheduler"`
	// Redis, when its URL is set, shares state among gateway replicas and
	// provers (see Redis).
	Redis Redis `yaml:"redis"`
	// Records bounds what a worker's completion record may claim.
	Records Records `yaml:"records"`
	// Audit configures spot re-execution of sampled requests (package
	// audit).
	Audit Audit `yaml:"audit"`
	// CORS lets web pages on other origins call the API from a browser
	// (internal/cors; flag --cors-origins). Off while it lists no origin.
	CORS CORS `yaml:"cors"`
	// Responses is the store behind /v1/responses' store: true,
	// previous_response_id and GET/DELETE /v1/responses/{id}.
	Responses Responses `yaml:"responses"`
}

// Responses configures the response store: a bbolt file responses.db in
// data_dir, or Redis (under prefix + "responses:") in the Redis mode.
// Each response is readable only with the key that created it.
type Responses struct {
	// Enabled keeps responses (default true; false: every response is
	// answered with store: false and previous_response_id is refused).
	Enabled *bool `yaml:"enabled"`
	// TTL is how long a response is kept (default 720h, 30 days).
	TTL Duration `yaml:"ttl"`
	// MaxResponses is the most responses kept; the oldest go first
	// (default 100000).
	MaxResponses int `yaml:"max_responses"`
	// MaxBytes is the largest stored response, its conversation included,
	// as JSON (default 4 MiB); a larger one is answered but not kept.
	MaxBytes int `yaml:"max_bytes"`
}

// On reports whether responses are kept.
func (r Responses) On() bool { return r.Enabled == nil || *r.Enabled }

// CORS is the cors section (see internal/cors.Config for each field).
type CORS struct {
	// AllowedOrigins are exact origins, scheme://host[:port], or "*" alone.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHeaders are request headers pages may send beyond the
	// built-in list (Authorization, Content-Type, the OpenAI SDKs'
	// x-stainless-* and OpenAI-Organization/-Project, …).
	AllowedHeaders []string `yaml:"allowed_headers"`
	// AllowCredentials (default false) lets pages send cookies; never
	// with "*". Tollgate's keys are bearer tokens, which need no cookies.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge is how long browsers cache a preflight (default 10m).
	MaxAge Duration `yaml:"max_age"`
}

// Policy is the section as internal/cors's Config.
func (c CORS) Policy() cors.Config {
	return cors.Config{AllowedOrigins: c.AllowedOrigins, AllowedHeaders: c.AllowedHeaders,
		AllowCredentials: c.AllowCredentials, MaxAge: c.MaxAge.D()}
}

// Records is how the gateway checks each completion record a worker sends
// before it becomes a receipt (workers.RecordPolicy, built by tollgate gateway from these settings): it must name the
// task sent, its subject and the bytes relayed, the worker's own ID and a
// registered version, a time within ClockSkew of the batch, and token
// counts within the model's usage bounds. A record that fails is refused,
// the client gets 502 and the worker is ejected.
type Records struct {
	// ClockSkew is how far a record's time may lie outside the span the
	// gateway saw the batch run in (default 30s).
	ClockSkew Duration `yaml:"clock_skew"`
	// Bounds are every model's usage bounds; a zero field takes
	// task.DefaultUsageBounds' (one token per byte of text, slack 16 on
	// completions; one per byte, 8 per message and 64 on prompts).
	Bounds task.UsageBounds `yaml:"bounds"`
	// Models overrides Bounds for a model name, field by field (a zero
	// field keeps Bounds'); hidden_completion: true for a model whose
	// completion tokens include text it does not return (reasoning).
	Models map[string]task.UsageBounds `yaml:"models"`
}

// BoundsFor is model's usage bounds: Models[model] over Bounds over the
// defaults.
func (r Records) BoundsFor(model string) task.UsageBounds {
	b := r.Bounds
	if o, ok := r.Models[model]; ok {
		if o.CompletionPerByte != 0 {
			b.CompletionPerByte = o.CompletionPerByte
		}
		if o.CompletionSlack != 0 {
			b.CompletionSlack = o.CompletionSlack
		}
		if o.PromptPerByte != 0 {
			b.PromptPerByte = o.PromptPerByte
		}
		if o.PromptPerMessage != 0 {
			b.PromptPerMessage = o.PromptPerMessage
		}
		if o.PromptSlack != 0 {
			b.PromptSlack = o.PromptSlack
		}
		b.HiddenCompletion = b.HiddenCompletion || o.HiddenCompletion
	}
	return b.WithDefaults()
}

// Validate names the first bad field of the records section.
func (r Records) Validate() error {
	if r.ClockSkew < Duration(time.Second) || r.ClockSkew > Duration(time.Hour) {
		return fmt.Errorf("records.clock_skew: %s is outside [1s, 1h]", r.ClockSkew.D())
	}
	if err := r.Bounds.Validate(); err != nil {
		return fmt.Errorf("records.bounds.%w", err)
	}
	for name, b := range r.Models {
		if err := b.Validate(); err != nil {
			return fmt.Errorf("records.models[%s].%w", name, err)
		}
	}
	return nil
}

// Audit is the auditor's section: it re-executes a sampled fraction of
// finished greedy (or seeded, on exact engines) requests of keys with
// audit: true on a worker of another provider and disputes a worker caught
// serving another model. Zero values take package audit's defaults.
type Audit struct {
	Enabled     bool     `yaml:"enabled"`
	Rate        float64  `yaml:"rate"`      // fraction of eligible requests audited (default 0.01)
	MaxShare    float64  `yaml:"max_share"` // cap on audit work / served work, in tokens (default 0.05)
	Queue       int      `yaml:"queue"`     // audits waiting (default 256; beyond: dropped, counted)
	Concurrency int      `yaml:"concurrency"`
	Timeout     Duration `yaml:"timeout"` // one re-execution (default 5m)
}

// Redis is the shared-state mode: with URL set, every replica using the
// same Redis and Prefix shares the worker registry, the per-key rate
// limits, the receipt ledger and the proving queue. Empty URL: the
// embedded single-process stores (the default).
type Redis struct {
	// URL is redis://[user:pass@]host:port[/db] or rediss:// (TLS). The
	// --redis flag and TOLLGATE_REDIS_URL override it.
	URL string `yaml:"url"`
	// Prefix starts every key (default "{tollgate}:"); keep a hash tag
	// ({...}) in it so the Lua scripts' keys share a Redis Cluster slot.
	// Separate deployments on one Redis use separate prefixes.
	Prefix string `yaml:"prefix"`
	// WorkerTTL is how long a worker's shared registration outlives its
	// last heartbeat (default 10s; at least scheduler.heartbeat_timeout).
	WorkerTTL Duration `yaml:"worker_ttl"`
	// ClaimIdle is how long a proving job may go unacknowledged before
	// another prover claims it (XAUTOCLAIM min-idle; default 30s). Live
	// provers refresh their claim while they work, so it bounds how long a
	// dead prover's batch waits, not how long a proof may take.
	ClaimIdle Duration `yaml:"claim_idle"`
}

// Enabled reports whether the Redis mode is on.
func (r Redis) Enabled() bool { return r.URL != "" }

// HashedKeyPrefix marks an API or admin key stored as the SHA-256 of the
// secret: "sha256:" and 64 hex digits (e.g. `printf %s "$KEY" | sha256sum`).
const HashedKeyPrefix = "sha256:"

// validHashedKey reports whether a key that claims to be a digest is one;
// a key without the prefix is a plain secret and valid here.
func validHashedKey(k string) bool {
	h, ok := strings.CutPrefix(k, HashedKeyPrefix)
	if !ok {
		return true
	}
	_, err := hex.DecodeString(h)
	return err == nil && len(h) == 64
}

// Key roles (APIKey.Role).
const (
	// RoleClient (the default, also written "") makes inference requests
	// and reads its own receipts: those whose subject is its ID.
	RoleClient = "client"
	// RoleBilling reads every receipt (a billing system's key) and may
	// make no request.
	RoleBilling = "billing"
)

// APIKey is one client or billing key: Key is the secret, or
// HashedKeyPrefix and its SHA-256 in hex.
type APIKey struct {
	ID  string `yaml:"id"`
	Key string `yaml:"key"`
	// Role is client (default) or billing; see RoleClient and RoleBilling.
	Role     string   `yaml:"role"`
	Deadline Duration `yaml:"deadline"` // 0: timeouts.default_deadline
	Priority string   `yaml:"priority"` // interactive (default) or batch
	// RequestsPerMinute limits the key's requests (0: unlimited), exactly,
	// across every replica in the Redis mode.
	RequestsPerMinute int64 `yaml:"requests_per_minute"`
	// TokensPerMinute limits the key's prompt + completion tokens (0:
	// unlimited). Usage is known only when a request ends, so it is
	// charged then: a key is admitted while its token budget is not in
	// debt, and may overshoot by what its requests in flight use.
	TokensPerMinute int64 `yaml:"tokens_per_minute"`
	// Audit lets the auditor re-execute this key's requests: its prompts
	// then reach a second provider (a third on a mismatch). Default off.
	Audit bool `yaml:"audit"`
}

// Billing reports whether the key has the billing role.
func (k APIKey) Billing() bool { return k.Role == RoleBilling }

// PriorityClass maps Priority to the workers' constant.
func (k APIKey) PriorityClass() task.Priority {
	if k.Priority == "batch" {
		return task.PriorityBatch
	}
	return task.PriorityInteractive
}

// Model is one allowed model version.
type Model struct {
	Name          string `yaml:"name"`
	Digest        string `yaml:"digest"`
	ContextLength int    `yaml:"context_length"`
	Embeddings    bool   `yaml:"embeddings"`
	OwnedBy       string `yaml:"owned_by"`
}

// Version converts to the workers' type.
func (m Model) Version() task.ModelVersion {
	return task.ModelVersion{Name: m.Name, Digest: m.Digest, ContextLength: m.ContextLength, Embeddings: m.Embeddings, OwnedBy: m.OwnedBy}
}

// Limits bound request parameters; zero means the default.
type Limits struct {
	MaxTokens   int `yaml:"max_tokens"`   // default 131072
	MaxMessages int `yaml:"max_messages"` // default 4096
	MaxInputs   int `yaml:"max_inputs"`   // default 2048
}

// Timeouts of the front door; zero means the default.
type Timeouts struct {
	DefaultDeadline Duration `yaml:"default_deadline"` // default 10m
	KeepAlive       Duration `yaml:"keepalive"`        // SSE comment on idle streams, default 15s
	Read            Duration `yaml:"read"`             // reading one request, default 30s
	Idle            Duration `yaml:"idle"`             // kept-alive connection, default 120s
	Shutdown        Duration `yaml:"shutdown"`         // graceful shutdown bound, default 30s
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// Duration is a time.Duration written as a string ("1.5s").
type Duration time.Duration

// UnmarshalYAML accepts only duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if n.Kind != yaml.ScalarNode || n.Decode(&s) != nil {
		return fmt.Errorf("line %d: expected a duration string such as \"250ms\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the string form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default is the configuration with every default filled in and no keys.
func Default() *Config {
	c := &Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.BodyLimitBytes == 0 {
		c.BodyLimitBytes = 4 << 20
	}
	def := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	def(&c.Timeouts.DefaultDeadline, 10*time.Minute)
	def(&c.Timeouts.KeepAlive, 15*time.Second)
	def(&c.Timeouts.Read, 30*time.Second)
	def(&c.Timeouts.Idle, 120*time.Second)
	def(&c.Timeouts.Shutdown, 30*time.Second)
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Redis.Prefix == "" {
		c.Redis.Prefix = "{tollgate}:"
	}
	def(&c.Redis.WorkerTTL, 10*time.Second)
	def(&c.Redis.ClaimIdle, 30*time.Second)
	def(&c.Records.ClockSkew, task.DefaultRecordSkew)
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// Load reads, decodes (strictly), defaults and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML strictly, fills defaults and validates.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // empty file: defaults
		return nil, err
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch a := c.Audit; {
	case a.Rate < 0 || a.Rate > 1:
		return fmt.Errorf("audit.rate: %v is not in [0, 1]", a.Rate)
	case a.MaxShare < 0 || a.MaxShare > 1:
		return fmt.Errorf("audit.max_share: %v is not in [0, 1]", a.MaxShare)
	case a.Queue < 0 || a.Concurrency < 0 || a.Timeout < 0:
		return errors.New("audit: queue, concurrency and timeout must not be negative")
	}
	switch r := c.Responses; {
	case r.TTL < 0 || r.TTL > Duration(10*365*24*time.Hour):
		return fmt.Errorf("responses.ttl: %s is outside [0, 87600h]", r.TTL.D())
	case r.MaxResponses < 0 || r.MaxResponses > 1e9:
		return fmt.Errorf("responses.max_responses: %d is outside [0, 1e9]", r.MaxResponses)
	case r.MaxBytes < 0 || r.MaxBytes > 1<<30:
		return fmt.Errorf("responses.max_bytes: %d is outside [0, 1GiB]", r.MaxBytes)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q is not host:port", c.Listen)
	}
	if c.BodyLimitBytes < 1024 || c.BodyLimitBytes > 1<<30 {
		return fmt.Errorf("body_limit_bytes: %d is outside [1024, 1GiB]", c.BodyLimitBytes)
	}
	ids := map[string]bool{}
	secrets := map[string]bool{}
	for i, k := range c.APIKeys {
		switch {
		case k.ID == "" || len(k.ID) > 128 || strings.ContainsAny(k.ID, " \t\r\n"):
			return fmt.Errorf("api_keys[%d].id: 1 to 128 characters without whitespace", i)
		case ids[k.ID]:
			return fmt.Errorf("api_keys[%d].id: %q repeats", i, k.ID)
		case len(k.Key) < 8:
			return fmt.Errorf("api_keys[%d].key: at least 8 characters", i)
		case !validHashedKey(k.Key):
			return fmt.Errorf("api_keys[%d].key: a %s key is %s and 64 hex digits (the SHA-256 of the secret)", i, HashedKeyPrefix, HashedKeyPrefix)
		case secrets[k.Key]:
			return fmt.Errorf("api_keys[%d].key: repeats another key", i)
		case k.Deadline < 0:
			return fmt.Errorf("api_keys[%d].deadline: negative", i)
		case k.Role != "" && k.Role != RoleClient && k.Role != RoleBilling:
			return fmt.Errorf("api_keys[%d].role: %q is not client or billing", i, k.Role)
		case k.Priority != "" && k.Priority != "interactive" && k.Priority != "batch":
			return fmt.Errorf("api_keys[%d].priority: %q is not interactive or batch", i, k.Priority)
		case k.RequestsPerMinute < 0 || k.RequestsPerMinute > 1e9:
			return fmt.Errorf("api_keys[%d].requests_per_minute: %d is outside [0, 1e9]", i, k.RequestsPerMinute)
		case k.TokensPerMinute < 0 || k.TokensPerMinute > 1e12:
			return fmt.Errorf("api_keys[%d].tokens_per_minute: %d is outside [0, 1e12]", i, k.TokensPerMinute)
		}
		ids[k.ID], secrets[k.Key] = true, true
	}
	for i, k := range c.AdminKeys {
		if len(k) < 8 {
			return fmt.Errorf("admin_keys[%d]: at least 8 characters", i)
		}
		if !validHashedKey(k) {
			return fmt.Errorf("admin_keys[%d]: a %s key is %s and 64 hex digits (the SHA-256 of the secret)", i, HashedKeyPrefix, HashedKeyPrefix)
		}
		if secrets[k] {
			return fmt.Errorf("admin_keys[%d]: repeats an API key", i)
		}
	}
	for i, t := range c.ProviderTokens {
		if len(t) < 16 {
			return fmt.Errorf("provider_tokens[%d]: at least 16 characters", i)
		}
	}
	for i, m := range c.Models {
		if err := task.ValidateModelVersion(m.Version()); err != nil {
			return fmt.Errorf("models[%d]: %w", i, err)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"limits.max_tokens", c.Limits.MaxTokens}, {"limits.max_messages", c.Limits.MaxMessages}, {"limits.max_inputs", c.Limits.MaxInputs}} {
		if f.v < 0 {
			return fmt.Errorf("%s: negative", f.name)
		}
	}
	if c.MaxPendingAge < 0 {
		return errors.New("max_pending_age: negative")
	}
	for _, f := range []struct {
		name string
		d    Duration
	}{{"timeouts.default_deadline", c.Timeouts.DefaultDeadline}, {"timeouts.keepalive", c.Timeouts.KeepAlive},
		{"timeouts.read", c.Timeouts.Read}, {"timeouts.idle", c.Timeouts.Idle}, {"timeouts.shutdown", c.Timeouts.Shutdown}} {
		if f.d <= 0 {
			return fmt.Errorf("%s: must be positive", f.name)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	if err := c.Scheduler.Validate(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	if err := c.Records.Validate(); err != nil {
		return err
	}
	if err := c.CORS.Policy().Validate(); err != nil {
		return fmt.Errorf("cors.%w", err)
	}
	return c.Redis.Validate()
}

// Validate names the first bad field of the redis section.
func (r Redis) Validate() error {
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") || (u.Host == "" && u.Scheme != "unix") {
			return errors.New("redis.url: want redis://host:port[/db], rediss://… or unix://path")
		}
	}
	switch {
	case len(r.Prefix) > 64 || strings.ContainsAny(r.Prefix, " \t\r\n*?[]"):
		return fmt.Errorf("redis.prefix: %q: at most 64 characters, no spaces or glob characters", r.Prefix)
	case r.WorkerTTL < Duration(time.Second) || r.WorkerTTL > Duration(time.Hour):
		return fmt.Errorf("redis.worker_ttl: %s is outside [1s, 1h]", r.WorkerTTL.D())
	case r.ClaimIdle < Duration(100*time.Millisecond) || r.ClaimIdle > Duration(time.Hour):
		return fmt.Errorf("redis.claim_idle: %s is outside [100ms, 1h]", r.ClaimIdle.D())
	}
	return nil
}
