package config

import (
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

func TestParse(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		yaml    string
		wantErr string // substring naming the field; "" means valid
	}{
		{"empty file gives defaults", ``, ""},
		{"full", `
listen: 0.0.0.0:9000
data_dir: /tmp/x
body_limit_bytes: 65536
api_keys:
  - {id: team-a, key: sk-aaaaaaaa, deadline: 2m, priority: batch}
  - {id: billing, key: sk-bbbbbbbb, role: billing}
admin_keys: [sk-admin-123]
provider_tokens: [pt-0123456789abcdef]
open_registration: true
models:
  - {name: llama3-8b, digest: ` + digest + `, context_length: 8192}
limits: {max_tokens: 4096}
timeouts: {default_deadline: 1m, keepalive: 5s}
log: {level: debug, format: json}
scheduler: {policy: round-robin, heartbeat_timeout: 3s}
`, ""},
		{"unknown field", `listne: x`, "listne"},
		{"duration not a string", `timeouts: {keepalive: 5}`, "duration"},
		{"bad duration", `timeouts: {keepalive: soon}`, "soon"},
		{"bad listen", `listen: nowhere`, "listen"},
		{"short key", `api_keys: [{id: a, key: x}]`, "api_keys[0].key"},
		{"hashed keys", `{api_keys: [{id: a, key: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}], admin_keys: ["sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"]}`, ""},
		{"hashed key too short", `api_keys: [{id: a, key: "sha256:abcdef0123"}]`, "api_keys[0].key"},
		{"hashed key not hex", `api_keys: [{id: a, key: "sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}]`, "api_keys[0].key"},
		{"hashed admin key not hex", `admin_keys: ["sha256:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]`, "admin_keys[0]"},
		{"duplicate id", `api_keys: [{id: a, key: sk-aaaaaaaa}, {id: a, key: sk-bbbbbbbb}]`, "api_keys[1].id"},
		{"bad record skew", `records: {clock_skew: 1ms}`, "records.clock_skew"},
		{"bad model bounds", `records: {models: {m: {prompt_slack: -1}}}`, "records.models[m].prompt_slack"},
		{"bad priority", `api_keys: [{id: a, key: sk-aaaaaaaa, priority: urgent}]`, "api_keys[0].priority"},
		{"bad role", `api_keys: [{id: a, key: sk-aaaaaaaa, role: root}]`, "api_keys[0].role"},
		{"admin repeats api key", `{api_keys: [{id: a, key: sk-aaaaaaaa}], admin_keys: [sk-aaaaaaaa]}`, "admin_keys[0]"},
		{"short provider token", `provider_tokens: [short]`, "provider_tokens[0]"},
		{"bad model digest", `models: [{name: m, digest: xyz}]`, "models[0]"},
		{"negative limit", `limits: {max_tokens: -1}`, "limits.max_tokens"},
		{"bad log level", `log: {level: loud}`, "log.level"},
		{"tiny body limit", `body_limit_bytes: 10`, "body_limit_bytes"},
		{"bad scheduler", `scheduler: {policy: random}`, "scheduler"},
		{"rate limits", `api_keys: [{id: a, key: sk-aaaaaaaa, requests_per_minute: 60, tokens_per_minute: 100000}]`, ""},
		{"negative rate limit", `api_keys: [{id: a, key: sk-aaaaaaaa, requests_per_minute: -1}]`, "api_keys[0].requests_per_minute"},
		{"redis mode", `redis: {url: "redis://127.0.0.1:6379/2", prefix: "{prod}:", worker_ttl: 5s, claim_idle: 1m}`, ""},
		{"redis url scheme", `redis: {url: "http://127.0.0.1:6379"}`, "redis.url"},
		{"redis prefix glob", `redis: {url: "redis://x:1", prefix: "a*"}`, "redis.prefix"},
		{"redis worker ttl", `redis: {worker_ttl: 10ms}`, "redis.worker_ttl"},
		{"redis claim idle", `redis: {claim_idle: 2h}`, "redis.claim_idle"},
		{"cors", `cors: {allowed_origins: ["https://app.example.com", "http://localhost:5173"], allowed_headers: [X-Mine], max_age: 1h}`, ""},
		{"cors star", `cors: {allowed_origins: ["*"]}`, ""},
		{"cors star with credentials", `cors: {allowed_origins: ["*"], allow_credentials: true}`, "cors.allow_credentials"},
		{"cors origin with path", `cors: {allowed_origins: ["https://app.example.com/"]}`, "cors.allowed_origins[0]"},
		{"cors bare host", `cors: {allowed_origins: [app.example.com]}`, "cors.allowed_origins[0]"},
		{"cors null", `cors: {allowed_origins: ["null"]}`, "cors.allowed_origins[0]"},
		{"cors wildcard subdomain", `cors: {allowed_origins: ["https://*.example.com"]}`, "cors.allowed_origins[0]"},
		{"cors negative max age", `cors: {allowed_origins: ["*"], max_age: -1s}`, "cors.max_age"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if c.Listen == "" || c.Timeouts.KeepAlive == 0 {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to name %q", err, tc.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Default()
	if c.Listen != "127.0.0.1:8080" || c.DataDir != "./data" || c.Timeouts.DefaultDeadline.D() != 10*time.Minute {
		t.Errorf("Default() = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:1\n"))
	f.Add([]byte("timeouts: {keepalive: 5s}\n"))
	f.Add([]byte("api_keys: [{id: a, key: sk-aaaaaaaa}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted a config that does not validate")
		}
	})
}

func TestRecordBoundsPerModel(t *testing.T) {
	c, err := Parse([]byte(`
records:
  bounds: {prompt_slack: 100}
  models:
    r1: {hidden_completion: true, completion_slack: 4}
`))
	if err != nil {
		t.Fatal(err)
	}
	def := c.Records.BoundsFor("other")
	if def.PromptSlack != 100 || def.CompletionSlack != task.DefaultUsageBounds.CompletionSlack || def.HiddenCompletion {
		t.Errorf("default bounds %+v", def)
	}
	r1 := c.Records.BoundsFor("r1")
	if r1.PromptSlack != 100 || r1.CompletionSlack != 4 || !r1.HiddenCompletion || r1.PromptPerMessage != task.DefaultUsageBounds.PromptPerMessage {
		t.Errorf("r1 bounds %+v", r1)
	}
	if c.Records.ClockSkew.D() != task.DefaultRecordSkew {
		t.Errorf("clock skew %s", c.Records.ClockSkew.D())
	}
}
