// Package sched is the scheduling bench behind `tollgate bench sched`: one
// request trace (Poisson arrivals, heavy-tailed prompt and output lengths)
// replayed against a pool of simulated workers of different speeds, one of
// which slows down midway, under each scheduling policy. Everything but the
// workers is the production code path — scheduler.Scheduler with its
// filters, scorers, picker, admission and per-worker batchers — driven by a
// discrete-event virtual clock, so a 30 s run takes well under a second of
// wall time and gives the same numbers every time for the same seed.
package sched

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// WorkerSpec is one simulated worker of the pool.
type WorkerSpec struct {
	ID      string `json:"id"`
	Profile string `json:"profile"` // a sim.Profiles() name
}

// Config is one bench: the pool, the trace and the SLOs.
type Config struct {
	Workers []WorkerSpec `json:"workers"`
	// SlowWorker slows down by Slowdown at the middle of the run.
	SlowWorker string  `json:"slow_worker"`
	Slowdown   float64 `json:"slowdown"`
	// Loads are arrival rates as fractions of the pool's capacity.
	Loads    []float64     `json:"loads"`
	Duration time.Duration `json:"duration"`
	Seed     uint64        `json:"seed"`
	// Prompt and output lengths are log-normal (heavy-tailed) with these
	// medians and σ, clipped to [8, MaxPrompt] and [4, MaxOutput] tokens.
	PromptMedian float64 `json:"prompt_median"`
	PromptSigma  float64 `json:"prompt_sigma"`
	MaxPrompt    int     `json:"max_prompt"`
	OutputMedian float64 `json:"output_median"`
	OutputSigma  float64 `json:"output_sigma"`
	MaxOutput    int     `json:"max_output"`
	// SLOs for goodput.
	TTFTSLO time.Duration `json:"ttft_slo"`
	TPOTSLO time.Duration `json:"tpot_slo"`
	// Deadline, when > 0, is every request's deadline after arrival
	// (interactive class), which lets the tollgate policy shed.
	Deadline time.Duration `json:"deadline,omitempty"`
	Policies []string      `json:"policies"`
	// AuditRate, when > 0, injects spot re-execution audits as the
	// auditor (package audit) makes them: after a request completes it is
	// sampled with this probability and re-executed with the same shape,
	// priority class batch, on another worker chosen at random. AuditShare
	// caps audit work at that fraction of served work, in tokens (the
	// auditor's token bucket; default 0.05).
	AuditRate  float64 `json:"audit_rate,omitempty"`
	AuditShare float64 `json:"audit_share,omitempty"`
}

// DefaultConfig is the bench: 2× H100, 2× A100, 1× L40S, one H100
// three times slower from the middle on, 70% and 90% load, 30 s.
func DefaultConfig() Config {
	return Config{
		Workers: []WorkerSpec{
			{"h100-a", "llama3-8b-h100"}, {"h100-b", "llama3-8b-h100"},
			{"a100-a", "llama3-8b-a100"}, {"a100-b", "llama3-8b-a100"},
			{"l40s-a", "llama3-8b-l40s"},
		},
		SlowWorker: "h100-b", Slowdown: 3,
		Loads: []float64{0.7, 0.9}, Duration: 30 * time.Second, Seed: 1,
		PromptMedian: 384, PromptSigma: 1.0, MaxPrompt: 6000,
		OutputMedian: 128, OutputSigma: 0.8, MaxOutput: 2000,
		TTFTSLO: time.Second, TPOTSLO: 50 * time.Millisecond,
		Policies: []string{scheduler.PolicyRoundRobin, scheduler.PolicyLeastRequest, scheduler.PolicyTollgate},
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	profiles := sim.Profiles()
	if len(c.Workers) == 0 {
		return fmt.Errorf("workers: none")
	}
	found := c.SlowWorker == ""
	for i, w := range c.Workers {
		if _, ok := profiles[w.Profile]; !ok {
			return fmt.Errorf("workers[%d].profile: unknown profile %q", i, w.Profile)
		}
		found = found || w.ID == c.SlowWorker
	}
	switch {
	case !found:
		return fmt.Errorf("slow_worker: no worker %q", c.SlowWorker)
	case c.Slowdown < 1 && c.SlowWorker != "":
		return fmt.Errorf("slowdown: must be >= 1, got %v", c.Slowdown)
	case len(c.Loads) == 0:
		return fmt.Errorf("loads: none")
	case c.Duration < time.Second:
		return fmt.Errorf("duration: must be at least 1s, got %s", c.Duration)
	case c.PromptMedian < 1 || c.OutputMedian < 1 || c.PromptSigma < 0 || c.OutputSigma < 0:
		return fmt.Errorf("prompt/output median and sigma: must be positive")
	case c.MaxPrompt < 8 || c.MaxOutput < 4:
		return fmt.Errorf("max_prompt/max_output: too small")
	case c.TTFTSLO <= 0 || c.TPOTSLO <= 0:
		return fmt.Errorf("ttft_slo/tpot_slo: must be positive")
	case len(c.Policies) == 0:
		return fmt.Errorf("policies: none")
	}
	if c.AuditRate < 0 || c.AuditRate > 1 || c.AuditShare < 0 || c.AuditShare > 1 {
		return fmt.Errorf("audit_rate/audit_share: must be in [0, 1], got %v/%v", c.AuditRate, c.AuditShare)
	}
	for i, l := range c.Loads {
		if l <= 0 || l > 2 {
			return fmt.Errorf("loads[%d]: must be in (0, 2], got %v", i, l)
		}
	}
	for i, p := range c.Policies {
		if err := (scheduler.Config{Policy: p}).Validate(); err != nil {
			return fmt.Errorf("policies[%d]: %w", i, err)
		}
	}
	return nil
}

// MarshalJSON writes durations as strings ("30s"), as config files do.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return json.Marshal(struct {
		plain
		Duration string `json:"duration"`
		TTFTSLO  string `json:"ttft_slo"`
		TPOTSLO  string `json:"tpot_slo"`
		Deadline string `json:"deadline,omitempty"`
	}{plain(c), c.Duration.String(), c.TTFTSLO.String(), c.TPOTSLO.String(), durationOrEmpty(c.Deadline)})
}

func durationOrEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// Arrival is one request of the trace.
type Arrival struct {
	At     time.Duration
	Prompt int
	Output int
}

// Trace draws Poisson arrivals at rate per second for d.
func (c Config) Trace(rate float64, seed uint64) []Arrival {
	rng := rand.New(rand.NewPCG(seed, 0x7ace))
	var out []Arrival
	at := 0.0
	for {
		at += rng.ExpFloat64() / rate
		if at >= c.Duration.Seconds() {
			return out
		}
		p := clampInt(int(c.PromptMedian*math.Exp(c.PromptSigma*rng.NormFloat64())), 8, c.MaxPrompt)
		o := clampInt(int(c.OutputMedian*math.Exp(c.OutputSigma*rng.NormFloat64())), 4, c.MaxOutput)
		out = append(out, Arrival{At: time.Duration(at * float64(time.Second)), Prompt: p, Output: o})
	}
}

func clampInt(v, lo, hi int) int { return max(lo, min(v, hi)) }

// Capacity is the pool's sustainable request rate: per worker, MaxNumSeqs
// sequences at the full-load factor, each taking prefill plus decode of the
// mean prompt and output, with the slow worker at its slowed speed (so the
// pool can carry the load through the whole run).
func (c Config) Capacity(meanPrompt, meanOutput float64) float64 {
	profiles := sim.Profiles()
	total := 0.0
	for _, w := range c.Workers {
		p := profiles[w.Profile]
		slow := 1.0
		if w.ID == c.SlowWorker {
			slow = c.Slowdown
		}
		service := (p.PrefillOverhead.Seconds() + p.PrefillPerToken.Seconds()*meanPrompt +
			p.InterTokenLatency.Seconds()*(meanOutput-1)) * p.TimeFactorUnderLoad * slow
		total += float64(p.MaxNumSeqs) / service
	}
	return total
}

// PolicyResult is one policy's numbers on one trace. Times are milliseconds.
type PolicyResult struct {
	Policy     string  `json:"policy"`
	Requests   int     `json:"requests"`
	Completed  int     `json:"completed"`
	Shed       int     `json:"shed"`   // refused at admission (429)
	Failed     int     `json:"failed"` // any other error (504, 503, …)
	TTFTP50    float64 `json:"ttft_p50_ms"`
	TTFTP99    float64 `json:"ttft_p99_ms"`
	E2EP99     float64 `json:"e2e_p99_ms"`
	TPOTP50    float64 `json:"tpot_p50_ms"`
	TPOTP99    float64 `json:"tpot_p99_ms"`
	Goodput    float64 `json:"goodput_rps"` // completed within both SLOs, per second of the trace
	SLOMet     float64 `json:"slo_met_fraction"`
	DecisionUs float64 `json:"decision_p50_us"` // scheduler CPU time per decision (wall clock)
	WallMs     float64 `json:"wall_ms"`
	// Audits (with AuditRate > 0): re-executions started and finished,
	// samples skipped for want of budget, and audit work over served
	// work in tokens (what the auditor's max_share caps).
	Audits        int     `json:"audits,omitempty"`
	AuditsDone    int     `json:"audits_done,omitempty"`
	AuditsSkipped int     `json:"audits_skipped,omitempty"`
	AuditShare    float64 `json:"audit_share,omitempty"`
}

// LoadResult is every policy on one load.
type LoadResult struct {
	Load     float64        `json:"load"`
	RateRPS  float64        `json:"rate_rps"`
	Requests int            `json:"requests"`
	Policies []PolicyResult `json:"policies"`
}

// Result is a whole bench.
type Result struct {
	Config      Config       `json:"config"`
	CapacityRPS float64      `json:"capacity_rps"`
	Loads       []LoadResult `json:"loads"`
}

// Run runs the bench.
func Run(cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Capacity from the distribution's own means (a long sample).
	probe := cfg
	probe.Duration = time.Hour
	sample := probe.Trace(50, cfg.Seed^0xca9)
	mp, mo := meanLengths(sample)
	res := &Result{Config: cfg, CapacityRPS: cfg.Capacity(mp, mo)}
	for _, load := range cfg.Loads {
		rate := load * res.CapacityRPS
		trace := cfg.Trace(rate, cfg.Seed)
		lr := LoadResult{Load: load, RateRPS: rate, Requests: len(trace)}
		for _, policy := range cfg.Policies {
			pr, err := runPolicy(cfg, policy, trace)
			if err != nil {
				return nil, err
			}
			lr.Policies = append(lr.Policies, pr)
		}
		res.Loads = append(res.Loads, lr)
	}
	return res, nil
}

func meanLengths(tr []Arrival) (float64, float64) {
	var p, o float64
	for _, a := range tr {
		p += float64(a.Prompt)
		o += float64(a.Output)
	}
	n := float64(max(len(tr), 1))
	return p / n, o / n
}

// outcome is what happened to one request.
type outcome struct {
	arrival, first, done time.Time
	tokens               int
	err                  error
}

func runPolicy(cfg Config, policy string, trace []Arrival) (PolicyResult, error) {
	wallStart := time.Now()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := NewVirtualClock(start)
	profiles := sim.Profiles()
	sims := map[string]*SimWorker{}
	s, err := scheduler.New(scheduler.Config{Policy: policy}, scheduler.Deps{
		Clock:  clk,
		Logger: slog.New(slog.DiscardHandler),
		Dial:   func(url string) scheduler.Conn { return sims[strings.TrimPrefix(url, "sim://")] },
		Rand:   rand.New(rand.NewPCG(cfg.Seed, 0x91c)),
	})
	if err != nil {
		return PolicyResult{}, err
	}
	servedBy := map[string]string{} // request ID → worker, for audits
	for i, spec := range cfg.Workers {
		p := profiles[spec.Profile]
		w := NewSimWorker(spec.ID, p, clk, cfg.Seed+uint64(i)*7919)
		w.OnTask = func(t *task.Task) {
			if t.Priority == task.PriorityInteractive {
				servedBy[t.RequestID] = spec.ID
			}
		}
		sims[spec.ID] = w
		s.Upsert(&task.Registered{
			WorkerID: spec.ID, URL: "sim://" + spec.ID, MaxConcurrency: p.MaxNumSeqs,
			Models: []task.ModelVersion{{Name: p.Model, Digest: sim.ModelDigest(p.Model, p)}},
		})
		// Heartbeats every second, staggered, with the engine's own load.
		var beat func()
		beat = func() {
			_ = s.Heartbeat(&task.Heartbeat{WorkerID: spec.ID, Time: clk.Now(), Load: w.Load(), InFlight: w.running})
			clk.AfterFunc(time.Second, beat)
		}
		clk.AfterFunc(time.Duration(i)*200*time.Millisecond, beat)
	}
	if w := sims[cfg.SlowWorker]; w != nil {
		clk.AfterFunc(cfg.Duration/2, func() { w.SetSlowdown(cfg.Slowdown) })
	}
	model := profiles[cfg.Workers[0].Profile].Model
	au := newAuditInjector(cfg, s)

	outs := make([]outcome, len(trace))
	for i, a := range trace {
		clk.AfterFunc(a.At, func() {
			o := &outs[i]
			o.arrival = clk.Now()
			tk := &task.Task{
				RequestID: fmt.Sprintf("req-%d", i), Kind: task.KindCompletion, Model: model,
				Prompt: fmt.Sprintf("request %d", i), MaxTokens: a.Output, PromptTokensHint: a.Prompt,
			}
			if cfg.Deadline > 0 {
				tk.Deadline = o.arrival.Add(cfg.Deadline)
			}
			_, err := s.Submit(tk, func(ev task.Event) {
				if o.first.IsZero() {
					o.first = clk.Now()
				}
				if ev.Type == task.EventDelta {
					o.tokens += ev.Tokens
				}
			}, func(err error) {
				o.done, o.err = clk.Now(), err
				if err == nil {
					au.completed(tk, servedBy[tk.RequestID], a.Prompt+o.tokens)
				}
			})
			if err != nil {
				o.done, o.err = clk.Now(), err
			}
		})
	}
	// Run the trace, then let what is in flight finish (heartbeats keep
	// going, so stop once every request has ended).
	clk.Run(start.Add(cfg.Duration))
	for limit := 0; limit < 600 && (!allDone(outs) || au.running > 0); limit++ {
		clk.Run(clk.Now().Add(time.Second))
	}
	st := s.Stats()
	pr := summarize(cfg, policy, outs)
	au.report(&pr)
	pr.DecisionUs = st.DecisionLatency.P50 * 1e6
	pr.WallMs = float64(time.Since(wallStart).Microseconds()) / 1e3
	return pr, nil
}

func allDone(outs []outcome) bool {
	for i := range outs {
		if outs[i].done.IsZero() {
			return false
		}
	}
	return true
}

func summarize(cfg Config, policy string, outs []outcome) PolicyResult {
	pr := PolicyResult{Policy: policy, Requests: len(outs)}
	var ttft, e2e, tpot []float64
	good := 0
	for _, o := range outs {
		switch {
		case o.done.IsZero():
			pr.Failed++
			continue
		case o.err != nil:
			if code := errCode(o.err); code == scheduler.CodeDeadlineUnmeetable || code == scheduler.CodeOverloaded {
				pr.Shed++
			} else {
				pr.Failed++
			}
			continue
		}
		pr.Completed++
		t := o.first.Sub(o.arrival)
		ttft = append(ttft, ms(t))
		e2e = append(e2e, ms(o.done.Sub(o.arrival)))
		var per time.Duration
		if o.tokens > 1 {
			per = o.done.Sub(o.first) / time.Duration(o.tokens-1)
			tpot = append(tpot, ms(per))
		}
		if t <= cfg.TTFTSLO && per <= cfg.TPOTSLO {
			good++
		}
	}
	pr.TTFTP50, pr.TTFTP99 = quantile(ttft, 0.5), quantile(ttft, 0.99)
	pr.E2EP99 = quantile(e2e, 0.99)
	pr.TPOTP50, pr.TPOTP99 = quantile(tpot, 0.5), quantile(tpot, 0.99)
	pr.Goodput = float64(good) / cfg.Duration.Seconds()
	if len(outs) > 0 {
		pr.SLOMet = float64(good) / float64(len(outs))
	}
	return pr
}

func errCode(err error) string {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the exact nearest-rank quantile.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// auditInjector is the auditor's traffic in virtual time: a seeded draw
// after each completed request, the auditor's token bucket (credit grows
// by AuditShare × tokens served, an audit costs the request's tokens), and
// the re-execution submitted on another worker at priority batch, not
// streamed. It reproduces the load audits add, which is what the bench
// measures; the comparison itself is package audit's (and its tests').
type auditInjector struct {
	cfg     Config
	s       *scheduler.Scheduler
	rng     *rand.Rand
	workers []string

	credit                          float64
	served, spent                   int
	started, done, skipped, running int
}

func newAuditInjector(cfg Config, s *scheduler.Scheduler) *auditInjector {
	a := &auditInjector{cfg: cfg, s: s, rng: rand.New(rand.NewPCG(cfg.Seed, 0xa0d17))}
	if a.cfg.AuditShare == 0 {
		a.cfg.AuditShare = 0.05
	}
	for _, w := range cfg.Workers {
		a.workers = append(a.workers, w.ID)
	}
	return a
}

// completed is called when an interactive request ends well: it may
// start the request's audit on a worker other than by.
func (a *auditInjector) completed(t *task.Task, by string, tokens int) {
	if a.cfg.AuditRate <= 0 {
		return
	}
	a.served += tokens
	a.credit = min(a.credit+a.cfg.AuditShare*float64(tokens), 4*float64(a.cfg.MaxPrompt+a.cfg.MaxOutput))
	if a.rng.Float64() >= a.cfg.AuditRate {
		return
	}
	if a.credit < float64(tokens) {
		a.skipped++
		return
	}
	var others []string
	for _, w := range a.workers {
		if w != by {
			others = append(others, w)
		}
	}
	if len(others) == 0 {
		a.skipped++
		return
	}
	a.credit -= float64(tokens)
	re := *t
	re.RequestID = "audit-" + t.RequestID
	re.Priority, re.Stream, re.Deadline = task.PriorityBatch, false, time.Time{}
	a.started++
	a.running++
	n := t.PromptTokensHint
	_, err := a.s.SubmitTo(&re, others[a.rng.IntN(len(others))], func(ev task.Event) {
		if ev.Type == task.EventDelta {
			n += ev.Tokens
		}
	}, func(err error) {
		a.running--
		if err == nil {
			a.done++
		}
		a.spent += n
	})
	if err != nil {
		a.running-- // refused at once: not an audit run
		a.started--
	}
}

func (a *auditInjector) report(pr *PolicyResult) {
	pr.Audits, pr.AuditsDone, pr.AuditsSkipped = a.started, a.done, a.skipped
	if a.served > 0 {
		pr.AuditShare = float64(a.spent) / float64(a.served)
	}
}
