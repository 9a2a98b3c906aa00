// Package audit catches a worker that serves a different model than it
// signed for. A receipt proves that a registered worker claimed to serve a
// request with model version V; it cannot show that the GPU ran V's
// weights. The Auditor samples completed, reproducible requests after the
// fact and re-executes each on a different worker serving the same model
// version and run by another provider; a mismatch goes to a third worker as
// referee, and the worker the referee contradicts is disputed: taken out of
// rotation, with the evidence kept for the operator.
//
// It never runs on the interactive path. The gateway hands it each recorded
// completion through Observe, which samples with a CSPRNG (the audited
// worker cannot know beforehand which requests will be audited), charges
// the audit budget and queues without blocking (a full queue drops the
// audit and counts it). Re-executions run with the request's own shape
// (same request ID, subject, prompt and parameters, so the request digest
// is equal; same priority and streaming, a deadline as far off, a fresh
// trace context: see execute), so the re-executing worker cannot tell an
// audit from traffic.
//
// Privacy: an audit re-sends the customer's prompt to a second provider,
// and a mismatch to a third. The gateway audits only the requests of keys
// that allow it (config: api_keys[].audit; on for the dev key, off for
// other keys unless set).
package audit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/scheduler"
)

// Audit states of a receipt (the receipt JSON's "audit" field).
const (
	StatePassed       = "passed"       // a worker of another provider reproduced it
	StateFailed       = "failed"       // a referee sided with the auditor: its worker is disputed
	StateInconclusive = "inconclusive" // a mismatch no referee could settle
)

// Pool is what the auditor needs of the scheduler; *scheduler.Scheduler
// satisfies it.
type Pool interface {
	Peers(name, digest string) []scheduler.Peer
	DispatchTo(ctx context.Context, workerID string, t *task.Task, onEvent func(task.Event) error) error
	Dispute(workerID, reason string)
}

// Marker records a receipt's audit state (the receipts ledger). Optional.
type Marker interface {
	MarkAudit(ctx context.Context, receiptID, state string) error
}

// Config configures an Auditor. Durations in the config file are strings.
type Config struct {
	// Rate is the fraction of eligible, reproducible requests audited
	// (0..1). Default 0.01.
	Rate float64
	// MaxShare caps audit work as a fraction of the work served, counted
	// in tokens (prompt + completion): every recorded request earns
	// MaxShare × its tokens of credit, every re-execution costs its
	// request's tokens, and a sample without credit is skipped. Default
	// 0.05. A referee run is always paid for, even into debt.
	MaxShare float64
	// Burst bounds the credit saved up while idle, in tokens (default
	// 65536).
	Burst float64
	// Queue bounds the audits waiting to run (default 256); beyond it a
	// sample is dropped and counted.
	Queue int
	// Concurrency is the audits run at once (default 2).
	Concurrency int
	// Timeout bounds one re-execution (default 5m), or the original's
	// deadline budget when that is longer: the worker is told the budget.
	Timeout time.Duration
	// MaxDisputes bounds the disputes kept in memory, oldest dropped
	// first (default 1000).
	MaxDisputes int
	// Prefix is the statistical comparator for engines that are not
	// bit-exact.
	Prefix Prefix
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Rate < 0 {
		out.Rate = 0
	}
	if out.Rate == 0 {
		out.Rate = 0.01
	}
	out.Rate = min(out.Rate, 1)
	if out.MaxShare <= 0 {
		out.MaxShare = 0.05
	}
	if out.Burst <= 0 {
		out.Burst = 65536
	}
	if out.Queue <= 0 {
		out.Queue = 256
	}
	if out.Concurrency <= 0 {
		out.Concurrency = 2
	}
	if out.Timeout <= 0 {
		out.Timeout = 5 * time.Minute
	}
	if out.MaxDisputes <= 0 {
		out.MaxDisputes = 1000
	}
	return out
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Rate < 0 || c.Rate > 1:
		return fmt.Errorf("audit.rate: %v is not in [0, 1]", c.Rate)
	case c.MaxShare < 0 || c.MaxShare > 1:
		return fmt.Errorf("audit.max_share: %v is not in [0, 1]", c.MaxShare)
	}
	return nil
}

// Log keeps disputes for every replica to list: RedisLog in cluster mode.
// The auditor also keeps its own in memory, so a Log that fails loses
// nothing this replica found.
type Log interface {
	Add(ctx context.Context, d Dispute) error
	List(ctx context.Context) ([]Dispute, error)
}

// Deps are the auditor's collaborators.
type Deps struct {
	Pool   Pool   // required
	Marker Marker // nil: audit states are not recorded on receipts
	// Log, when set, receives every dispute, and ListDisputes reads it:
	// disputes found by any replica.
	Log    Log
	Clock  clock.Clock
	Logger *slog.Logger
	// Rand draws samples and picks workers. Default: crypto/rand. Tests
	// and benchmarks pass a seeded ChaCha8 (itself a CSPRNG).
	Rand mrand.Source
}

// Stats counts what the auditor did.
type Stats struct {
	Observed      uint64 `json:"observed"`       // recorded completions seen
	Ineligible    uint64 `json:"ineligible"`     // not reproducible (sampled, not greedy or seeded), or did not finish
	Sampled       uint64 `json:"sampled"`        // chosen for an audit
	SkippedBudget uint64 `json:"skipped_budget"` // sampled, but audit work was at its cap
	Dropped       uint64 `json:"dropped"`        // sampled, but the queue was full
	SkippedNoPeer uint64 `json:"skipped_no_peer"`
	// SkippedNoText: the comparison needs the response text (the engines
	// are not bit-exact) and the gateway kept none (a streamed response).
	SkippedNoText uint64 `json:"skipped_no_text"`
	Audited       uint64 `json:"audited"` // re-executed and compared
	Passed        uint64 `json:"passed"`
	Mismatched    uint64 `json:"mismatched"`
	Referees      uint64 `json:"referees"`
	Inconclusive  uint64 `json:"inconclusive"`
	Disputes      uint64 `json:"disputes"`
	Errors        uint64 `json:"errors"` // a re-execution that failed
	// ServedTokens and AuditTokens are the work seen and spent; their
	// ratio is what audits cost, at most about MaxShare.
	ServedTokens uint64 `json:"served_tokens"`
	AuditTokens  uint64 `json:"audit_tokens"`
}

// Share is audit work over served work.
func (s Stats) Share() float64 {
	if s.ServedTokens == 0 {
		return 0
	}
	return float64(s.AuditTokens) / float64(s.ServedTokens)
}

// Execution is one run of the disputed request, as evidence.
type Execution struct {
	Role       string          `json:"role"` // "audited", "auditor" or "referee"
	WorkerID   string          `json:"worker_id"`
	Provider   string          `json:"provider,omitempty"`
	Completion task.Completion `json:"completion"`
}

// Dispute is the evidence that a worker served something other than the
// model version it signed for: executions of one request (equal request
// digests and model versions) whose responses differ, two of them agreeing
// against the disputed worker's.
type Dispute struct {
	ID            string      `json:"id"`
	Time          time.Time   `json:"time"`
	WorkerID      string      `json:"worker_id"` // the disputed worker
	Provider      string      `json:"provider,omitempty"`
	ReceiptID     string      `json:"receipt_id"` // the audited request's receipt
	Model         string      `json:"model"`
	ModelDigest   string      `json:"model_digest"`
	RequestDigest string      `json:"request_digest"`
	Comparator    string      `json:"comparator"`
	Detail        string      `json:"detail"`
	Divergence    int         `json:"divergence"` // first differing byte, -1 unknown
	Executions    []Execution `json:"executions"`
}

// job is one sampled record.
type job struct {
	receiptID string
	task      task.Task
	budget    time.Duration // how far off the original's deadline was at dispatch
	out       Output
	cost      float64
}

// Auditor samples recorded completions and re-executes them. Create it with
// New, start it with Run, feed it with Observe.
type Auditor struct {
	cfg        Config
	pool       Pool
	marker     Marker
	disputeLog Log
	clock      clock.Clock
	log        *slog.Logger
	queue      chan job

	mu       sync.Mutex
	rand     *mrand.Rand
	credit   float64
	stats    Stats
	disputes []Dispute
}

// New validates cfg and builds an auditor.
func New(cfg Config, deps Deps) (*Auditor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Pool == nil {
		return nil, errors.New("audit: Deps.Pool is required")
	}
	cfg = cfg.withDefaults()
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Rand == nil {
		deps.Rand = cryptoSource{}
	}
	return &Auditor{cfg: cfg, pool: deps.Pool, marker: deps.Marker, disputeLog: deps.Log, clock: deps.Clock, log: deps.Logger,
		queue: make(chan job, cfg.Queue), rand: mrand.New(deps.Rand), credit: cfg.Burst}, nil
}

// cryptoSource is math/rand/v2's Source over crypto/rand.
type cryptoSource struct{}

func (cryptoSource) Uint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	return binary.LittleEndian.Uint64(b[:])
}

// Reproducible reports whether a task's output is a function of the task
// alone on an engine that declares determinism: greedy decoding, or
// seeded sampling when exact is true. Embeddings are left out (their
// floating-point output is compared by nothing here yet).
func Reproducible(t *task.Task, exact bool) bool {
	if t.Kind != task.KindChat && t.Kind != task.KindCompletion {
		return false
	}
	return t.Temperature == 0 || (exact && t.Seed != nil)
}

// Observe is called by the gateway after it has recorded a completion as
// receipt receiptID. It never blocks: it samples, charges the budget and
// queues. finish is the done event's finish reason (only requests that
// finished, "stop" or "length", are reproducible); text is the response
// text when the caller has it (the statistical comparator needs it).
// budget is how far off the request's deadline was when it was
// dispatched; its re-execution gets a deadline as far off.
func (a *Auditor) Observe(receiptID string, t *task.Task, budget time.Duration, c *task.Completion, finish, text string, hasText bool) {
	if t == nil || c == nil {
		return
	}
	tokens := float64(max(c.PromptTokens, 0) + max(c.CompletionTokens, 0))
	a.mu.Lock()
	a.stats.Observed++
	a.stats.ServedTokens += uint64(tokens)
	a.credit = min(a.credit+a.cfg.MaxShare*tokens, a.cfg.Burst)
	if (finish != "stop" && finish != "length") || !Reproducible(t, true) {
		a.stats.Ineligible++
		a.mu.Unlock()
		return
	}
	// The draw comes after the response, from a CSPRNG: nothing the
	// worker saw decides it.
	if a.rand.Float64() >= a.cfg.Rate {
		a.mu.Unlock()
		return
	}
	a.stats.Sampled++
	if a.credit < tokens {
		a.stats.SkippedBudget++
		a.mu.Unlock()
		return
	}
	a.credit -= tokens
	j := job{receiptID: receiptID, task: *t, budget: budget, out: Output{Completion: *c, Text: text, HasText: hasText}, cost: tokens}
	select {
	case a.queue <- j:
	default:
		a.credit += tokens
		a.stats.Dropped++
	}
	a.mu.Unlock()
}

// Run audits queued samples until ctx ends.
func (a *Auditor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range a.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-a.queue:
					a.audit(ctx, &j)
				}
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// Stats returns the counters so far.
func (a *Auditor) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Disputes lists the disputes recorded, oldest first.
func (a *Auditor) Disputes() []Dispute {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Dispute(nil), a.disputes...)
}

// ListDisputes is Disputes with those of the other replicas when a Log
// is set: the Log's list, oldest first, plus any of this replica's it
// lacks (a write that failed). With the Log unreachable it returns this
// replica's and the error.
func (a *Auditor) ListDisputes(ctx context.Context) ([]Dispute, error) {
	local := a.Disputes()
	if local == nil {
		local = []Dispute{}
	}
	if a.disputeLog == nil {
		return local, nil
	}
	shared, err := a.disputeLog.List(ctx)
	if err != nil {
		return local, err
	}
	if shared == nil {
		shared = []Dispute{}
	}
	seen := make(map[string]bool, len(shared))
	for _, d := range shared {
		seen[d.ID] = true
	}
	for _, d := range local {
		if !seen[d.ID] {
			shared = append(shared, d)
		}
	}
	slices.SortStableFunc(shared, func(x, y Dispute) int { return x.Time.Compare(y.Time) })
	return shared, nil
}

func (a *Auditor) count(f func(*Stats)) {
	a.mu.Lock()
	f(&a.stats)
	a.mu.Unlock()
}

// audit re-executes one sample and acts on the outcome.
func (a *Auditor) audit(ctx context.Context, j *job) {
	c := &j.out.Completion
	peers := a.pool.Peers(c.Model, c.ModelDigest)
	audited := scheduler.Peer{ID: c.WorkerID, Provider: c.WorkerID}
	for _, p := range peers {
		if p.ID == c.WorkerID {
			audited = p
		}
	}
	exact := audited.Determinism == task.DeterminismExact
	if !Reproducible(&j.task, exact) {
		a.count(func(s *Stats) { s.Ineligible++ })
		return
	}
	seeded := j.task.Temperature != 0 // reproducible only on exact engines
	auditor, ok := a.pick(peers, audited, nil, seeded)
	if !ok {
		a.count(func(s *Stats) { s.SkippedNoPeer++ })
		return
	}
	cmp := a.comparator(exact && auditor.Determinism == task.DeterminismExact)
	if !comparable(cmp, &j.out) {
		a.count(func(s *Stats) { s.SkippedNoText++ })
		return
	}
	second, err := a.execute(ctx, j, auditor.ID)
	if err != nil {
		a.count(func(s *Stats) { s.Errors++ })
		a.log.Warn("audit re-execution failed", "request_id", j.task.RequestID, "worker", auditor.ID, "err", err)
		return
	}
	v := cmp.Compare(&j.out, second)
	a.count(func(s *Stats) { s.Audited++ })
	if v.Match {
		a.count(func(s *Stats) { s.Passed++ })
		a.mark(ctx, j.receiptID, StatePassed)
		return
	}
	a.count(func(s *Stats) { s.Mismatched++ })
	a.log.Warn("audit mismatch", "request_id", j.task.RequestID, "worker", c.WorkerID, "auditor", auditor.ID,
		"model", c.Model, "detail", v.Detail)

	// A referee from a third provider settles it.
	referee, ok := a.pick(peers, audited, &auditor, seeded)
	if !ok {
		a.count(func(s *Stats) { s.Inconclusive++ })
		a.mark(ctx, j.receiptID, StateInconclusive)
		return
	}
	cmp = a.comparator(exact && auditor.Determinism == task.DeterminismExact && referee.Determinism == task.DeterminismExact)
	if !comparable(cmp, &j.out) {
		// The referee's engine is not exact and the original's text is
		// not kept: the audited worker's answer cannot be compared, and
		// must not lose to the auditor's for that.
		a.count(func(s *Stats) { s.SkippedNoText++; s.Inconclusive++ })
		a.mark(ctx, j.receiptID, StateInconclusive)
		return
	}
	a.mu.Lock()
	a.credit -= j.cost // paid even into debt: a mismatch must be settled
	a.mu.Unlock()
	third, err := a.execute(ctx, j, referee.ID)
	if err != nil {
		a.count(func(s *Stats) { s.Errors++; s.Inconclusive++ })
		a.mark(ctx, j.receiptID, StateInconclusive)
		return
	}
	a.count(func(s *Stats) { s.Referees++ })
	withAudited, withAuditor := cmp.Compare(&j.out, third), cmp.Compare(second, third)
	evidence := []Execution{
		{Role: "audited", WorkerID: audited.ID, Provider: audited.Provider, Completion: j.out.Completion},
		{Role: "auditor", WorkerID: auditor.ID, Provider: auditor.Provider, Completion: second.Completion},
		{Role: "referee", WorkerID: referee.ID, Provider: referee.Provider, Completion: third.Completion},
	}
	switch {
	case withAuditor.Match && !withAudited.Match:
		a.dispute(ctx, j, audited, cmp.Name(), v, evidence)
		a.mark(ctx, j.receiptID, StateFailed)
	case withAudited.Match && !withAuditor.Match:
		// The auditor is the odd one out: its own answer to this request
		// contradicts two other providers.
		a.dispute(ctx, j, auditor, cmp.Name(), withAuditor, evidence)
		a.mark(ctx, j.receiptID, StatePassed)
	default:
		a.count(func(s *Stats) { s.Inconclusive++ })
		a.mark(ctx, j.receiptID, StateInconclusive)
	}
}

// pick chooses a worker at random among those in rotation serving the
// version, other than the audited one and not of its provider (nor of
// also's, when set); needExact requires it to declare exact determinism
// (a seeded task is reproducible only there).
func (a *Auditor) pick(peers []scheduler.Peer, audited scheduler.Peer, also *scheduler.Peer, needExact bool) (scheduler.Peer, bool) {
	var cands []scheduler.Peer
	for _, p := range peers {
		switch {
		case !p.InRotation, p.ID == audited.ID, p.Provider == audited.Provider:
		case also != nil && (p.ID == also.ID || p.Provider == also.Provider):
		case needExact && p.Determinism != task.DeterminismExact:
		default:
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return scheduler.Peer{}, false
	}
	a.mu.Lock()
	i := a.rand.IntN(len(cands))
	a.mu.Unlock()
	return cands[i], true
}

// comparable reports whether cmp can judge the original output: only the
// exact comparator does without its text.
func comparable(cmp Comparator, original *Output) bool {
	_, exact := cmp.(Exact)
	return exact || original.HasText
}

func (a *Auditor) comparator(exact bool) Comparator {
	if exact {
		return Exact{}
	}
	return a.cfg.Prefix
}

// execute runs the request again on workerID as traffic would reach it:
// the same task, with its priority and streaming, a deadline as far off as
// the original's was when it was dispatched, and a fresh trace context of
// the same shape where it had one. The re-executing worker must not be
// able to tell an audit from traffic (docs/audit.md); before, an audit
// went at batch priority, unstreamed, with no trace context and the
// auditor's own 5-minute deadline, which no default traffic has.
func (a *Auditor) execute(ctx context.Context, j *job, workerID string) (*Output, error) {
	t := j.task
	t.Traceparent = obs.FreshTraceparent(j.task.Traceparent)
	budget := j.budget
	if budget <= 0 {
		budget = a.cfg.Timeout
	}
	// The auditor waits as long as the worker is told it may take, and at
	// least Timeout.
	ctx, cancel := context.WithTimeout(ctx, max(budget, a.cfg.Timeout))
	defer cancel()
	t.Deadline = a.clock.Now().Add(budget)
	// The dispatch runs under the fresh trace context as its remote
	// parent, so the scheduler's span (which replaces the task's
	// traceparent when it records) and the batch request's header carry
	// the same trace and sampling flag, as they do for traffic.
	ctx = obs.ContextWithTraceparent(ctx, t.Traceparent)
	var text strings.Builder
	var done *task.Completion
	err := a.pool.DispatchTo(ctx, workerID, &t, func(ev task.Event) error {
		switch ev.Type {
		case task.EventDelta:
			text.WriteString(ev.Text)
		case task.EventDone:
			done = ev.Completion
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if done == nil {
		return nil, errors.New("the worker sent no completion record")
	}
	if task.EndedEarly(done.FinishReason) {
		// A cut-short run proves nothing either way (and the evidence
		// checker refuses it): an error, not a verdict.
		return nil, fmt.Errorf("the re-execution ended early (%s)", done.FinishReason)
	}
	c := &j.out.Completion
	if done.RequestDigest != c.RequestDigest || done.Model != c.Model || done.ModelDigest != c.ModelDigest {
		return nil, fmt.Errorf("the re-execution's record names another request or model version (%s %s/%s)",
			done.RequestDigest, done.Model, done.ModelDigest)
	}
	a.mu.Lock()
	a.stats.AuditTokens += uint64(max(done.PromptTokens, 0) + max(done.CompletionTokens, 0))
	a.mu.Unlock()
	return &Output{Completion: *done, Text: text.String(), HasText: true}, nil
}

func (a *Auditor) dispute(ctx context.Context, j *job, w scheduler.Peer, comparator string, v Verdict, evidence []Execution) {
	c := &j.out.Completion
	d := Dispute{
		ID: ids.New("dsp-"), Time: a.clock.Now().UTC(), WorkerID: w.ID, Provider: w.Provider, ReceiptID: j.receiptID,
		Model: c.Model, ModelDigest: c.ModelDigest, RequestDigest: c.RequestDigest,
		Comparator: comparator, Detail: v.Detail, Divergence: v.Divergence, Executions: evidence,
	}
	a.pool.Dispute(w.ID, "audit "+d.ID+": "+v.Detail)
	a.mu.Lock()
	a.stats.Disputes++
	a.disputes = append(a.disputes, d)
	if over := len(a.disputes) - a.cfg.MaxDisputes; over > 0 {
		a.disputes = append(a.disputes[:0:0], a.disputes[over:]...)
	}
	a.mu.Unlock()
	a.log.Error("worker disputed", "worker", w.ID, "dispute", d.ID, "receipt", j.receiptID, "model", c.Model, "detail", v.Detail)
	if a.disputeLog != nil {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := a.disputeLog.Add(lctx, d); err != nil {
			a.log.Warn("dispute not written to the shared log (kept on this replica)", "dispute", d.ID, "err", err)
		}
	}
}

func (a *Auditor) mark(ctx context.Context, receiptID, state string) {
	if a.marker == nil || receiptID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.marker.MarkAudit(ctx, receiptID, state); err != nil {
		a.log.Warn("audit state not recorded", "receipt", receiptID, "state", state, "err", err)
	}
}
