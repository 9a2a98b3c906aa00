package scheduler

import (
	"cmp"
	"math"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// cand builds a candidate for plugin tests.
type candSpec struct {
	id         string
	slots      int
	assigned   int
	tokens     int
	beatAgo    time.Duration
	hb         bool
	waiting    int
	kv         float64
	memUsed    uint64
	draining   bool
	ejected    bool
	model      string
	digest     string
	perToken   float64
	embeddings bool
}

func mkCands(specs []candSpec, now time.Time) []*Candidate {
	var out []*Candidate
	for _, s := range specs {
		c := &Candidate{id: s.id, hash: hashString(s.id), slots: max(s.slots, 1), assigned: s.assigned, assignedTokens: s.tokens,
			hbSeen:  s.hb,
			latency: latencyModel{overhead: 0.02, perToken: cmp.Or(s.perToken, 1e-4), interToken: 0.01}}
		c.hb.Load = task.Load{Waiting: s.waiting, KVCacheUsage: s.kv}
		c.hb.Draining, c.draining, c.waiting = s.draining, s.draining, s.waiting
		c.setBeat(now.Add(-s.beatAgo))
		if s.memUsed > 0 {
			c.hb.GPUs = []task.GPU{{MemoryTotalMiB: 100, MemoryUsedMiB: s.memUsed}}
		}
		if s.ejected {
			c.setEjected(now.Add(time.Second))
		}
		c.models = []task.ModelVersion{{Name: cmp.Or(s.model, testModel), Digest: cmp.Or(s.digest, testDigest), Embeddings: s.embeddings}}
		c.pressure = memoryPressure(&c.hb)
		out = append(out, c)
	}
	return out
}

func ids(cands []*Candidate) []string {
	var out []string
	for _, c := range cands {
		out = append(out, c.id)
	}
	return out
}

func TestFilters(t *testing.T) {
	other := strings.Repeat("b", 64)
	tests := []struct {
		name   string
		filter Filter
		req    Request
		specs  []candSpec
		want   []string
	}{
		{"model by name", &ModelFilter{}, Request{}, []candSpec{{id: "a"}, {id: "b", model: "other"}}, []string{"a"}},
		{"embeddings need an embedding version", &ModelFilter{}, Request{Task: &task.Task{Kind: task.KindEmbedding, Model: testModel}},
			[]candSpec{{id: "a"}, {id: "b", embeddings: true}}, []string{"b"}},
		{"model pinned to a digest", &ModelFilter{Pins: map[string]string{testModel: other}}, Request{},
			[]candSpec{{id: "a"}, {id: "b", digest: other}}, []string{"b"}},
		{"health: silent, draining, ejected, excluded", &HealthFilter{Timeout: 3 * time.Second}, Request{Exclude: "e"},
			[]candSpec{{id: "ok", beatAgo: time.Second}, {id: "silent", beatAgo: 4 * time.Second}, {id: "drain", draining: true},
				{id: "ejected", ejected: true}, {id: "e"}}, []string{"ok"}},
		{"capacity: slots plus queue", &CapacityFilter{MaxQueue: 2}, Request{},
			[]candSpec{{id: "free", slots: 2, assigned: 3}, {id: "full", slots: 2, assigned: 4}}, []string{"free"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Now, req.nowNs = t0, monoNanos(t0)
			if req.Task == nil {
				req.Task = chat("r")
			}
			got := ids(tt.filter.Filter(&req, mkCands(tt.specs, t0)))
			if d := gocmp.Diff(got, tt.want); d != "" {
				t.Errorf("(-got +want):\n%s", d)
			}
		})
	}
}

func TestScorers(t *testing.T) {
	stale := 1500 * time.Millisecond
	tests := []struct {
		name   string
		scorer Scorer
		req    Request
		specs  []candSpec
		want   []float64
	}{
		{"ttft: fastest 1, twice as slow 0.5", &TTFTScorer{}, Request{PromptTokens: 1000},
			// prefill 0.02 + 1000 × perToken, at load factor 1 + 1/8
			[]candSpec{{id: "fast", slots: 8, perToken: 0.00008}, {id: "slow", slots: 8, perToken: 0.00018}},
			[]float64{1, 0.5}},
		{"ttft: in-flight tasks count before any heartbeat", &TTFTScorer{}, Request{PromptTokens: 0},
			[]candSpec{{id: "idle", slots: 4}, {id: "busy", slots: 4, assigned: 3}},
			[]float64{1, 1.25 / 2}},
		{"queue: shortest 1, longest 0, stale 0", &QueueScorer{StaleAfter: stale}, Request{},
			[]candSpec{{id: "a", hb: true, waiting: 0}, {id: "b", hb: true, waiting: 4}, {id: "c", hb: true, waiting: 2},
				{id: "stale", hb: true, beatAgo: 2 * time.Second}},
			[]float64{1, 0, 0.5, 0}},
		{"queue: all equal 1", &QueueScorer{StaleAfter: stale}, Request{},
			[]candSpec{{id: "a", hb: true}, {id: "b", hb: true}}, []float64{1, 1}},
		{"queue: scheduler's own overflow counts", &QueueScorer{StaleAfter: stale}, Request{},
			[]candSpec{{id: "a", hb: true, slots: 2, assigned: 4}, {id: "b", hb: true, slots: 2, assigned: 1}}, []float64{0, 1}},
		{"kv: free cache and memory, stale and never-seen saturated", &KVCacheScorer{StaleAfter: stale}, Request{},
			[]candSpec{{id: "a", hb: true, kv: 0.25}, {id: "b", hb: true, kv: 0.1, memUsed: 60}, {id: "stale", hb: true, beatAgo: 2 * time.Second},
				{id: "never"}},
			[]float64{0.75, 0.4, 0, 0}},
		{"affinity: no key, no preference", &AffinityScorer{MaxLoad: 0.8}, Request{},
			[]candSpec{{id: "a"}, {id: "b"}}, []float64{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Now, req.nowNs = t0, monoNanos(t0)
			req.Task = chat("r")
			cands := mkCands(tt.specs, t0)
			req.predTTFT = make([]float64, len(cands))
			for i, c := range cands {
				req.predTTFT[i] = predictTTFT(c, req.PromptTokens)
			}
			got := make([]float64, len(cands))
			tt.scorer.Score(&req, cands, got)
			if d := gocmp.Diff(got, tt.want, cmpopts.EquateApprox(0, 1e-9)); d != "" {
				t.Errorf("(-got +want):\n%s", d)
			}
		})
	}
}

func TestAffinityYieldsToLoad(t *testing.T) {
	s := &AffinityScorer{MaxLoad: 0.8}
	specs := []candSpec{{id: "a", slots: 10}, {id: "b", slots: 10}, {id: "c", slots: 10}}
	req := Request{Now: t0, AffinityKey: 12345}
	cands := mkCands(specs, t0)
	scores := make([]float64, 3)
	s.Score(&req, cands, scores)
	pref := -1
	for i, v := range scores {
		if v == 1 {
			pref = i
		}
	}
	if pref < 0 {
		t.Fatalf("no preferred worker: %v", scores)
	}
	// The same key prefers the same worker every time.
	again := make([]float64, 3)
	s.Score(&req, cands, again)
	if d := gocmp.Diff(again, scores); d != "" {
		t.Fatalf("preference not stable (-got +want):\n%s", d)
	}
	// Load the preferred worker past MaxLoad: the preference moves on.
	cands[pref].assigned = 9
	for _, c := range cands {
		if c != cands[pref] {
			c.assigned = 6
		}
	}
	s.Score(&req, cands, scores)
	if scores[pref] != 0 {
		t.Fatalf("loaded preferred worker still preferred: %v", scores)
	}
}

func TestMaxScorePickerTieBreak(t *testing.T) {
	h := newHarness(t, Config{})
	p := h.s.picker.(*MaxScorePicker)
	seen := map[int]int{}
	for i := 0; i < 300; i++ {
		seen[p.Pick(nil, nil, []float64{0.5, 0.9, 0.9, 0.1, 0.9})]++
	}
	if len(seen) != 3 || seen[0] > 0 || seen[3] > 0 {
		t.Fatalf("ties not broken among the best three: %v", seen)
	}
	for i, n := range seen {
		if n < 60 {
			t.Errorf("index %d picked %d of 300 times; want about 100", i, n)
		}
	}
}

func TestLatencyModelLearns(t *testing.T) {
	m := latencyModel{overhead: 0.02, perToken: 1e-4, interToken: 0.015}
	// True worker: 15 ms + 40 µs/token, 7 ms between tokens.
	for i := 0; i < 200; i++ {
		p := []int{50, 500, 2000, 100}[i%4]
		m.observeTTFT(0.2, p, time.Duration((0.015+40e-6*float64(p))*float64(time.Second)))
		m.observeITL(0.2, 7*time.Millisecond)
	}
	for _, p := range []int{50, 2000} {
		want := 0.015 + 40e-6*float64(p)
		if got := m.prefill(p); math.Abs(got-want)/want > 0.15 {
			t.Errorf("prefill(%d) = %.4f s, want %.4f ± 15%%", p, got, want)
		}
	}
	if math.Abs(m.interToken-0.007) > 1e-4 {
		t.Errorf("interToken = %v, want 0.007", m.interToken)
	}
}

func TestConfigValidate(t *testing.T) {
	neg := -time.Second
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring naming the field; empty: valid
	}{
		{"zero value is valid", Config{}, ""},
		{"baseline policy", Config{Policy: PolicyLeastRequest}, ""},
		{"unknown policy", Config{Policy: "random"}, "scheduler.policy"},
		{"unknown scorer", Config{Scorers: []PluginConfig{{"vibes", 1}}}, "scheduler.scorers[0].name"},
		{"duplicate scorer", Config{Scorers: []PluginConfig{{ScorerQueue, 1}, {ScorerQueue, 2}}}, "scheduler.scorers[1].name"},
		{"negative weight", Config{Scorers: []PluginConfig{{ScorerQueue, -1}}}, "scheduler.scorers[0].weight"},
		{"negative duration", Config{HeartbeatTimeout: neg}, "scheduler.heartbeat_timeout"},
		{"stale beyond timeout", Config{HeartbeatTimeout: time.Second, TelemetryStale: 2 * time.Second}, "scheduler.telemetry_stale"},
		{"bad batching", Config{Batching: batchingCfg(-1)}, "scheduler.batching.max_batch"},
		{"bad pin", Config{Pins: map[string]string{"m": "xyz"}}, "scheduler.pins"},
		{"alpha above 1", Config{EWMAAlpha: 2}, "scheduler.ewma_alpha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}
