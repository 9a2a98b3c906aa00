// Package scheduler places each task on a worker. It keeps the registry view
// of the workers (registration, heartbeats, telemetry, and what it has itself
// placed on each), runs a scheduling cycle in the style of the llm-d router —
// filters (model version, health and staleness, capacity) → weighted scorers
// (predicted TTFT, queue depth, KV-cache/memory pressure, prefix affinity),
// each in [0,1] → a max-score picker with random tie-break — admits or sheds
// the task against its deadline and priority, hands it to the chosen
// worker's batcher, and streams its events back. A worker that fails is
// ejected for an exponential back-off; a task that has sent no event is
// retried once on another worker.
//
// The scheduler does no I/O itself: it talks to workers through Conn, which
// the gateway dials with workers.NewClient.
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/batching"
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Conn is what the scheduler needs of a link to one worker; *workers.Client
// satisfies it.
type Conn interface {
	// Run sends a batch and calls onEvent with each event in order; it
	// returns once every task has ended, or with an error if the link fails.
	Run(ctx context.Context, b *task.Batch, onEvent func(task.Event)) error
	// Cancel stops one task of a running batch.
	Cancel(ctx context.Context, batchID string, index int) error
}

// StartConn is an optional Conn extension for links that deliver a batch's
// events by callback without a goroutine: Start returns at once and later
// calls onEvent for each event and onEnd once. The scheduling bench's
// simulated workers implement it so a whole run advances on a virtual clock
// in one goroutine.
type StartConn interface {
	Start(b *task.Batch, onEvent func(task.Event), onEnd func(error))
}

// Deps are the scheduler's collaborators.
type Deps struct {
	Clock  clock.Clock
	Logger *slog.Logger
	// DialWorker returns the link to a registered worker at w.URL,
	// presenting w.SessionToken (the gateway wires workers.NewClient). It
	// is called again when the worker registers anew with another URL or
	// session. One of DialWorker and Dial is required.
	DialWorker func(w *task.Registered) Conn
	// Dial is DialWorker for links without a session token (simulated
	// workers in benchmarks); DialWorker wins when both are set.
	Dial func(url string) Conn
	// Rand breaks ties between equal scores (default: randomly seeded).
	Rand *rand.Rand
	// Obs traces each dispatch and records the scheduler's metrics; New
	// installs the queue and worker-health gauges on it. nil: off.
	Obs *obs.Provider
}

// Scheduler is the registry of workers and the placement of tasks on them.
// It is safe for concurrent use.
type Scheduler struct {
	cfg    Config
	clock  clock.Clock
	logger *slog.Logger
	dial   func(*task.Registered) Conn
	obs    *obs.Provider
	// metrics is never nil (off when Obs is nil); its Record methods are
	// lock-free and may be called under mu.
	metrics *obs.Metrics

	mu        sync.Mutex
	workers   map[string]*Candidate
	order     []*Candidate // registration order, for stable cycles
	filters   []Filter
	scorers   []Scorer
	weights   []float64
	picker    Picker
	shed      bool
	scratch   cycleScratch
	batchSeq  uint64
	batchBase string
	stats     statsState
	disputed  map[string]string // worker ID → why (see Dispute)
}

// cycleScratch is reused by every cycle (under mu) so a decision allocates nothing.
type cycleScratch struct {
	cands  []*Candidate
	pred   []float64
	scores []float64
	totals []float64
}

// New validates cfg and returns a scheduler with no workers.
func New(cfg Config, deps Deps) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.DialWorker == nil {
		if deps.Dial == nil {
			return nil, errors.New("scheduler: Deps.DialWorker (or Dial) is required")
		}
		dial := deps.Dial
		deps.DialWorker = func(w *task.Registered) Conn { return dial(w.URL) }
	}
	cfg = cfg.withDefaults()
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Rand == nil {
		deps.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	s := &Scheduler{
		cfg: cfg, clock: deps.Clock, logger: deps.Logger, dial: deps.DialWorker,
		obs: deps.Obs, metrics: deps.Obs.Metrics(),
		workers:   map[string]*Candidate{},
		batchBase: randomBase(deps.Rand),
	}
	s.filters = []Filter{
		&ModelFilter{Pins: cfg.Pins},
		&CapabilityFilter{},
		&HealthFilter{Timeout: cfg.HeartbeatTimeout},
		&CapacityFilter{MaxQueue: cfg.Batching.MaxQueue},
	}
	switch cfg.Policy {
	case PolicyRoundRobin:
		s.picker = &RoundRobinPicker{}
	case PolicyLeastRequest:
		s.picker = &LeastRequestPicker{Rand: deps.Rand}
	default:
		s.picker = &MaxScorePicker{Rand: deps.Rand}
		s.shed = *cfg.Shed
		for _, p := range cfg.Scorers {
			if p.Weight == 0 {
				continue
			}
			s.scorers = append(s.scorers, scorerFactories[p.Name](&cfg))
			s.weights = append(s.weights, p.Weight)
		}
	}
	s.stats.init(s.filters, s.scorers)
	if s.metrics.Enabled() {
		s.metrics.ObserveQueue(s.queueCounts)
		s.metrics.ObserveWorkers(s.workerCounts)
	}
	return s, nil
}

func randomBase(r *rand.Rand) string {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	b := make([]byte, 8)
	for i := range b {
		b[i] = digits[r.IntN(len(digits))]
	}
	return string(b)
}

// Upsert adds a registered worker or updates one that registered again. A
// registration counts as a heartbeat. Re-registering keeps what the
// scheduler has learned of the worker's speed.
func (s *Scheduler) Upsert(w *task.Registered) {
	if w == nil || w.WorkerID == "" || w.URL == "" {
		s.logger.Warn("registration without a worker ID or URL ignored")
		return
	}
	now := s.clock.Now()
	slots := w.MaxConcurrency
	if slots <= 0 {
		slots = s.cfg.DefaultMaxConcurrency
	}
	s.mu.Lock()
	c, ok := s.workers[w.WorkerID]
	reg := *w
	reg.Models, reg.GPUs = slices.Clone(w.Models), slices.Clone(w.GPUs)
	if ok && c.reg.URL == w.URL && c.reg.SessionToken == w.SessionToken {
		c.reg, c.models = reg, reg.Models
		c.setBeat(now)
		c.hb.Draining, c.draining = false, false
		resize := c.slots != slots
		c.slots = slots
		b := c.batcher
		s.mu.Unlock()
		if resize {
			b.SetCapacity(slots)
		}
		s.logger.Info("worker registered again", "worker", w.WorkerID, "url", w.URL)
		return
	}
	conn := s.dial(&reg)
	if conn == nil {
		s.mu.Unlock()
		s.logger.Error("no link to the worker; registration ignored", "worker", w.WorkerID, "url", w.URL)
		return
	}
	var old *Candidate
	if ok {
		old = c // another URL or session: a new link, same identity
		s.removeLocked(old)
	}
	c = &Candidate{
		id: w.WorkerID, reg: reg, models: reg.Models, hash: hashString(w.WorkerID), conn: conn,
		slots: slots, joined: now,
		latency: latencyModel{
			overhead:   s.cfg.PriorOverhead.Seconds(),
			perToken:   s.cfg.PriorPerToken.Seconds(),
			interToken: s.cfg.PriorInterToken.Seconds(),
		},
	}
	c.setBeat(now)
	_, c.disputed = s.disputed[c.id]
	if old != nil {
		c.latency = old.latency
	}
	c.batcher = batching.New(s.cfg.Batching, slots, batching.Deps[*attempt]{
		Clock:  s.clock,
		Send:   func(frame []*batching.Entry[*attempt]) { s.sendFrame(c, frame) },
		Expire: func(e *batching.Entry[*attempt]) { s.expired(e.Value) },
	})
	s.workers[c.id] = c
	s.order = append(s.order, c)
	s.mu.Unlock()
	if old != nil {
		s.failQueued(old)
	}
	s.logger.Info("worker registered", "worker", w.WorkerID, "url", w.URL, "slots", slots, "models", len(w.Models))
}

// Heartbeat records a worker's telemetry and load. An unknown worker gets an
// error so that it registers again.
func (s *Scheduler) Heartbeat(hb *task.Heartbeat) error {
	if hb == nil || hb.WorkerID == "" {
		return apierr.BadRequest("worker_id", "invalid_heartbeat", "heartbeat names no worker")
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.workers[hb.WorkerID]
	if !ok {
		return apierr.NotFound("worker_id", "unknown_worker", "worker %s is not registered; register again", hb.WorkerID)
	}
	c.hb = *hb
	c.hb.GPUs = slices.Clone(hb.GPUs)
	// Telemetry comes from the worker: keep it in range for the scorers.
	c.hb.Load.Waiting = min(max(c.hb.Load.Waiting, 0), 1<<20)
	c.hb.Load.Running = min(max(c.hb.Load.Running, 0), 1<<20)
	c.hb.Load.KVCacheUsage = clamp01(c.hb.Load.KVCacheUsage)
	c.waiting, c.draining = c.hb.Load.Waiting, c.hb.Draining
	c.hbSeen = true
	c.pressure = memoryPressure(&c.hb)
	c.setBeat(now)
	return nil
}

// Remove takes a worker out (deregistration). Tasks queued for it fail with
// a retryable error and go to another worker; tasks in flight finish.
func (s *Scheduler) Remove(workerID string) {
	s.mu.Lock()
	c, ok := s.workers[workerID]
	if ok {
		s.removeLocked(c)
	}
	s.mu.Unlock()
	if ok {
		s.failQueued(c)
		s.logger.Info("worker removed", "worker", workerID)
	}
}

func (s *Scheduler) removeLocked(c *Candidate) {
	delete(s.workers, c.id)
	s.order = slices.DeleteFunc(s.order, func(x *Candidate) bool { return x == c })
	// A link with a connection pool of its own (*workers.Client) lets its
	// idle connections go; batches in flight on it finish.
	if cl, ok := c.conn.(interface{ Close() error }); ok {
		_ = cl.Close()
	}
}

// failQueued fails what still waits in a removed worker's batcher.
func (s *Scheduler) failQueued(c *Candidate) {
	for _, e := range c.batcher.Close() {
		s.attemptFailed(e.Value, apierr.Unavailable("worker_gone", "the worker left before the request started", nil), true)
	}
}

// WorkerStatus is one worker as the admin listing shows it.
type WorkerStatus struct {
	task.Registered
	SessionToken  string          `json:"-"`
	Joined        time.Time       `json:"joined"`
	LastHeartbeat time.Time       `json:"last_heartbeat"`
	Healthy       bool            `json:"healthy"`
	Draining      bool            `json:"draining"`
	EjectedUntil  *time.Time      `json:"ejected_until,omitempty"`
	Disputed      string          `json:"disputed,omitempty"` // why an audit took it out of rotation
	Slots         int             `json:"slots"`
	Assigned      int             `json:"assigned"` // tasks queued or in flight, as the scheduler counts
	Telemetry     *task.Heartbeat `json:"telemetry,omitempty"`
	Batcher       batching.Stats  `json:"batcher"`
	Latency       LatencyEstimate `json:"latency"`
	Served        uint64          `json:"served"`
	Failed        uint64          `json:"failed"`
}

// LatencyEstimate is what the scheduler has learned of a worker's speed.
type LatencyEstimate struct {
	OverheadMs        float64 `json:"prefill_overhead_ms"`
	PrefillPerTokenUs float64 `json:"prefill_per_token_us"`
	InterTokenMs      float64 `json:"inter_token_ms"`
	Samples           int     `json:"samples"`
}

// Workers lists every registered worker, by ID.
func (s *Scheduler) Workers() []WorkerStatus {
	now := s.clock.Now()
	s.mu.Lock()
	out := make([]WorkerStatus, 0, len(s.order))
	batchers := make([]*batching.Batcher[*attempt], 0, len(s.order))
	for _, c := range s.order {
		st := WorkerStatus{
			Registered: c.reg, Joined: c.joined, LastHeartbeat: c.lastBeat,
			Healthy: c.healthy(monoNanos(now), s.cfg.HeartbeatTimeout), Draining: c.hb.Draining,
			Slots: c.slots, Assigned: c.assigned, Served: c.served, Failed: c.failed,
			Latency: LatencyEstimate{
				OverheadMs: c.latency.overhead * 1e3, PrefillPerTokenUs: c.latency.perToken * 1e6,
				InterTokenMs: c.latency.interToken * 1e3, Samples: c.latency.samples,
			},
		}
		st.Registered.SessionToken = ""
		st.Disputed = s.disputed[c.id]
		if c.ejected(monoNanos(now)) {
			t := c.ejectedUntil
			st.EjectedUntil = &t
		}
		if c.hbSeen {
			hb := c.hb
			st.Telemetry = &hb
		}
		out = append(out, st)
		batchers = append(batchers, c.batcher)
	}
	s.mu.Unlock()
	for i, b := range batchers {
		out[i].Batcher = b.Stats()
	}
	slices.SortFunc(out, func(a, b WorkerStatus) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
	return out
}

// Models lists the distinct model versions served by healthy workers, by
// name then digest.
func (s *Scheduler) Models() []task.ModelVersion {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[[2]string]bool{}
	var out []task.ModelVersion
	for _, c := range s.order {
		if !c.healthy(monoNanos(now), s.cfg.HeartbeatTimeout) {
			continue
		}
		for _, m := range c.reg.Models {
			k := [2]string{m.Name, m.Digest}
			if !seen[k] {
				seen[k] = true
				out = append(out, m)
			}
		}
	}
	slices.SortFunc(out, func(a, b task.ModelVersion) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Digest, b.Digest))
	})
	return out
}
