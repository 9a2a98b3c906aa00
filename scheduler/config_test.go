package scheduler

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
	"gopkg.in/yaml.v3"
)

func TestConfigFromYAML(t *testing.T) {
	const doc = `
policy: tollgate
scorers:
  - {name: ttft, weight: 3}
  - {name: queue, weight: 1}
batching:
  max_batch: 8
  max_wait: 5ms
  max_queue: 64
heartbeat_timeout: 3s
telemetry_stale: 1500ms
eject_base: 500ms
`
	var cfg Config
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(cfg.Scorers, []PluginConfig{{ScorerTTFT, 3}, {ScorerQueue, 1}}); d != "" {
		t.Errorf("scorers (-got +want):\n%s", d)
	}
	if cfg.Batching.MaxWait != 5*time.Millisecond || cfg.TelemetryStale != 1500*time.Millisecond || cfg.EjectBase != 500*time.Millisecond {
		t.Errorf("durations not decoded from strings: %+v", cfg)
	}
	s, err := New(cfg, Deps{DialWorker: func(*task.Registered) Conn { return &scriptConn{} }})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.scorers); got != 2 {
		t.Errorf("%d scorers enabled, want 2", got)
	}
}
