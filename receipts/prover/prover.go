// Package prover is Tollgate's receipt prover pipeline: it groups pending
// ledger leaves by worker and model version, closes a batch when it fills
// the largest circuit or its oldest leaf reaches the maximum age (choosing
// the smallest circuit that fits), has the worker countersign the batch
// root, proves the batch with zk, and stores the proof, marking the
// receipts proven. Batches are assigned durably before proving, so a
// restart resumes them and no receipt is proven twice.
//
// Nothing acknowledged is lost to a slow or absent worker: a batch that
// cannot be countersigned waits (capped exponential backoff with jitter,
// see backoff) with the reason on its receipts, and is re-cut after
// GiveUpAfter from its first offer; only records the worker explicitly
// refuses fail, with its reason. At most MaxOpenPerWorker batches are open
// per worker, so a backlog is cut as it can be signed and proven, not all
// at once; a stopped prover (ctx done) cuts nothing more and leaves the
// rest of the backlog pending for the next start.
//
// Wiring (as in `tollgate dev`):
//
//	st, err := ledger.OpenBolt(filepath.Join(dataDir, "receipts.db"))
//	l := ledger.New(st, ledger.Options{KeyDir: keyDir, Logger: logger})
//	err = zk.EnsureDevKeys(keyDir, 8) // seconds; set up 64 and 256 in the background, Run picks them up
//	go prover.Run(ctx, l, prover.Config{KeyDir: keyDir, Logger: logger})
//	// gateway.Deps{Ledger: l}: the gateway records the worker URLs and
//	// admits (worker, model version) pairs into l at registration
//	// (SetWorkerURL, AdmitWorker).
//
// and on the worker:
//
//	cs := workers.NewCountersigner(key, agent, logger, // key: *keys.Key, agent: *workers.Agent
//		workers.WithCountersignCredential(member.CountersignToken)) // member: *workers.Registerer
//	h := workers.NewHandler(agent, logger, workers.WithRoute("POST "+workers.PathCountersign, cs))
package prover

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

// Config configures the pipeline.
type Config struct {
	// KeyDir holds proving and verifying keys (batch-N.pk/.vk); every
	// capacity found there is used.
	KeyDir string `yaml:"key_dir"`
	// MaxAge closes a batch whose oldest leaf has waited this long
	// (default 1s), so receipts at low load are proven quickly.
	MaxAge time.Duration `yaml:"max_age"`
	// Interval between scans of the ledger (default 250ms).
	Interval time.Duration `yaml:"interval"`
	// GiveUpAfter re-cuts a batch its worker has not countersigned this
	// long after it was first offered (default 1h): its receipts go back to
	// the pending pool, to be batched again once the worker answers. Never
	// a reason to fail them.
	GiveUpAfter time.Duration `yaml:"give_up_after"`
	// BackoffMin and BackoffMax bound the wait between countersign
	// attempts of a worker that does not answer (defaults 1s and 5m; see
	// backoff).
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// CountersignTimeout bounds one countersign call (default 30s).
	CountersignTimeout time.Duration `yaml:"countersign_timeout"`
	// MaxOpenPerWorker bounds the batches open (cut and not yet proven)
	// per worker (default 4): the backlog is cut as fast as it is signed
	// and proven. With several provers on a queue it bounds them together.
	MaxOpenPerWorker int `yaml:"max_open_per_worker"`
	// Random draws the backoff jitter, in [0, 1) (default math/rand/v2).
	Random func() float64 `yaml:"-"`

	Logger *slog.Logger `yaml:"-"`
	Clock  clock.Clock  `yaml:"-"`
	// Countersign asks a worker to sign a batch. Default: HTTP POST to the
	// worker URL recorded in the ledger (ledger.SetWorkerURL).
	Countersign func(ctx context.Context, workerID string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) `yaml:"-"`
	// LinkDial opens a stream to a worker on an outbound link (a
	// link://SESSION URL in the ledger): the gateway's worker link, for a
	// prover in the gateway process that holds the session. nil: such
	// workers cannot be reached from here, and their batches wait with
	// that reason until a prover that can reach them takes them.
	LinkDial func(ctx context.Context, session string) (net.Conn, error) `yaml:"-"`
	// Child proves in another process (zk.Child; `tollgate dev` and
	// `gateway` start it at the lowest CPU priority, so proving takes only
	// what serving leaves idle). Its proofs are checked here before they
	// are stored. nil: prove in this process.
	Child *zk.Child `yaml:"-"`
	// Obs traces each batch (its own trace, linked to the requests whose
	// receipts it proves) and records proving time. nil: off.
	Obs *obs.Provider `yaml:"-"`

	// Consumer names this prover on a shared proving queue (a store that
	// is a ledger.Queue); default host-pid-random. Names must differ
	// between live provers.
	Consumer string `yaml:"consumer"`
	// ClaimIdle is how long a queued job may sit unacknowledged before
	// another prover takes it over (default 30s). A prover renews its claim
	// every ClaimIdle/3 while it works, so a slow proof is not taken over;
	// a dead prover's is, after ClaimIdle.
	ClaimIdle time.Duration `yaml:"claim_idle"`
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.KeyDir == "":
		return errors.New("prover: key_dir is required")
	case c.MaxAge < 0 || c.MaxAge > time.Hour:
		return fmt.Errorf("prover: max_age %s: want 0 (default 1s) to 1h", c.MaxAge)
	case c.Interval < 0 || c.Interval > time.Minute:
		return fmt.Errorf("prover: interval %s: want 0 (default 250ms) to 1m", c.Interval)
	case c.GiveUpAfter < 0:
		return fmt.Errorf("prover: give_up_after %s is negative", c.GiveUpAfter)
	case c.BackoffMin < 0 || c.BackoffMax < 0 || c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax:
		return fmt.Errorf("prover: backoff_min %s, backoff_max %s: want 0 <= min <= max", c.BackoffMin, c.BackoffMax)
	case c.CountersignTimeout < 0:
		return fmt.Errorf("prover: countersign_timeout %s is negative", c.CountersignTimeout)
	case c.MaxOpenPerWorker < 0:
		return fmt.Errorf("prover: max_open_per_worker %d is negative", c.MaxOpenPerWorker)
	case c.ClaimIdle < 0 || c.ClaimIdle > time.Hour:
		return fmt.Errorf("prover: claim_idle %s: want 0 (default 30s) to 1h", c.ClaimIdle)
	case len(c.Consumer) > 128:
		return fmt.Errorf("prover: consumer name longer than 128 bytes")
	}
	return nil
}

// Pipeline proves a ledger's receipts.
type Pipeline struct {
	ledger  *ledger.Ledger
	store   ledger.Store
	cfg     Config
	provers []*zk.Prover // smallest capacity first
	logger  *slog.Logger
	loaded  time.Time // when the key directory was last scanned
	retry   *backoff
	lastCut int // batches the last Step cut
}

// New loads the keys and returns a pipeline over l.
func New(l *ledger.Ledger, cfg Config) (*Pipeline, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = time.Hour
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = max(5*time.Minute, cfg.BackoffMin)
	}
	if cfg.CountersignTimeout <= 0 {
		cfg.CountersignTimeout = 30 * time.Second
	}
	if cfg.MaxOpenPerWorker <= 0 {
		cfg.MaxOpenPerWorker = 4
	}
	if cfg.Random == nil {
		cfg.Random = rand.Float64
	}
	if cfg.ClaimIdle <= 0 {
		cfg.ClaimIdle = 30 * time.Second
	}
	if cfg.Consumer == "" {
		host, _ := os.Hostname()
		cfg.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), ids.New(""))
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = l.Logger()
	}
	provers, err := zk.LoadProversWith(cfg.KeyDir, cfg.Child)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{ledger: l, store: l.Store(), cfg: cfg, provers: provers, logger: cfg.Logger, loaded: cfg.Clock.Now(),
		retry: newBackoff(cfg.BackoffMin, cfg.BackoffMax, cfg.Random)}
	if p.cfg.Countersign == nil {
		client := &http.Client{Timeout: cfg.CountersignTimeout}
		var linkClient *http.Client
		if cfg.LinkDial != nil {
			// Each session is its own host (SESSION.worker-link), so the
			// transport's pool never hands one worker's stream to a
			// request for another.
			tr := workers.NewTransport()
			tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				session, ok := strings.CutSuffix(host, linkHostSuffix)
				if err != nil || !ok {
					return nil, fmt.Errorf("countersign: %q is not a worker link address", addr)
				}
				return cfg.LinkDial(ctx, session)
			}
			linkClient = &http.Client{Timeout: cfg.CountersignTimeout, Transport: tr}
		}
		p.cfg.Countersign = func(ctx context.Context, workerID string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			url, err := l.WorkerURL(ctx, workerID)
			if err != nil {
				return nil, err
			}
			if url == "" {
				return nil, fmt.Errorf("no URL recorded for worker %s", workerID)
			}
			cred, err := l.CountersignCredential(ctx, workerID)
			if err != nil {
				return nil, err
			}
			if session, ok := workers.LinkSession(url); ok {
				if linkClient == nil {
					return nil, fmt.Errorf("worker %s is on an outbound link (%s) that only the gateway holding it can reach: prove in that gateway's process", workerID, workers.LinkScheme)
				}
				return workers.RequestCountersign(ctx, linkClient, "http://"+session+linkHostSuffix, cred, req)
			}
			return workers.RequestCountersign(ctx, client, url, cred, req)
		}
	}
	return p, nil
}

// privateError is an error whose detail is for the operator's log only:
// Error is the public text a receipt's pending reason shows.
type privateError struct {
	err    error
	public string
}

func (e privateError) Error() string { return e.public }
func (e privateError) Unwrap() error { return e.err }

// privateDetail is err with a privateError's detail, for the log.
func privateDetail(err error) error {
	var pe privateError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.public, pe.err)
	}
	return err
}

// linkHostSuffix makes a link worker's session the host of its countersign
// URL (link sessions are [0-9a-z-]).
const linkHostSuffix = ".worker-link"

// Run runs the pipeline until ctx is done: it scans the ledger every
// Interval and proves what is due. Errors of one pass are logged and
// retried on the next.
func Run(ctx context.Context, l *ledger.Ledger, cfg Config) error {
	p, err := New(l, cfg)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// Run is the loop behind the package-level Run. Over a store that is a
// ledger.Queue it runs as one of many provers sharing the queue (see
// runQueue); otherwise it is the only prover of its ledger. It returns when
// ctx is done, cutting nothing more: what is not batched stays pending.
func (p *Pipeline) Run(ctx context.Context) error {
	if q, ok := p.store.(ledger.Queue); ok {
		return p.runQueue(ctx, q)
	}
	for {
		busy, err := p.step(ctx)
		if err != nil && ctx.Err() == nil {
			p.logger.Error("prover pass failed", "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !busy {
			p.sleep(ctx, p.cfg.Interval)
		}
	}
}

// Step makes one pass: it tries the open batches (left by a restart, or
// waiting on their worker) that are due, then cuts what is due within the
// per-worker bound and proves it. It returns how many receipts it proved.
func (p *Pipeline) Step(ctx context.Context) (int, error) {
	p.refreshKeys()
	proven := 0
	open, err := p.store.OpenBatches(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, b := range open {
		if ctx.Err() != nil {
			return proven, nil
		}
		n, _, err := p.attempt(ctx, b)
		proven += n
		errs = append(errs, err)
	}
	if ctx.Err() != nil {
		return proven, nil
	}
	cut, err := p.cut(ctx)
	errs = append(errs, err)
	for _, b := range cut {
		if ctx.Err() != nil {
			break
		}
		n, _, err := p.attempt(ctx, b)
		proven += n
		errs = append(errs, err)
	}
	p.lastCut = len(cut)
	return proven, errors.Join(errs...)
}

// step is Step reporting whether it did anything (the loop then goes on
// at once instead of waiting Interval).
func (p *Pipeline) step(ctx context.Context) (bool, error) {
	n, err := p.Step(ctx)
	return n > 0 || p.lastCut > 0, err
}

// cut assigns the batches that are due, per worker, keeping each worker
// within MaxOpenPerWorker open batches; a worker that is not answering gets
// none (its receipts wait in the pool, or in the batches it already has).
func (p *Pipeline) cut(ctx context.Context) ([]*ledger.Batch, error) {
	open, err := p.store.OpenBatches(ctx)
	if err != nil {
		return nil, err
	}
	openPer := map[string]int{}
	for _, b := range open {
		openPer[b.WorkerID]++
	}
	ws, err := p.store.PendingWorkers(ctx)
	if err != nil {
		return nil, err
	}
	now := p.cfg.Clock.Now()
	largest := p.provers[len(p.provers)-1].Capacity
	var out []*ledger.Batch
	var errs []error
	for _, w := range ws {
		slots := p.cfg.MaxOpenPerWorker - openPer[w]
		if _, waiting := p.retry.workerWaiting(w, now); slots <= 0 || waiting {
			continue
		}
		pending, err := p.store.PendingFor(ctx, w, slots*largest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		due := p.due(pending)
		for _, b := range due[:min(len(due), slots)] {
			if err := p.store.AssignBatch(ctx, b); err != nil {
				if !errors.Is(err, ledger.ErrNotPending) { // another prover cut it first
					errs = append(errs, err)
				}
				continue
			}
			out = append(out, b)
		}
	}
	return out, errors.Join(errs...)
}

// sleep waits d on the pipeline's clock, or until ctx ends.
func (p *Pipeline) sleep(ctx context.Context, d time.Duration) {
	done := make(chan struct{})
	t := p.cfg.Clock.AfterFunc(d, func() { close(done) })
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-done:
	}
}

type groupKey struct{ worker, model, digest string }

// due groups pending entries by worker and model version and returns the
// batches to close now: full batches at the largest capacity, and a group's
// remainder at the smallest capacity that fits once its oldest leaf is
// MaxAge old.
func (p *Pipeline) due(pending []*ledger.Entry) []*ledger.Batch {
	groups := map[groupKey][]*ledger.Entry{}
	var order []groupKey
	for _, e := range pending {
		k := groupKey{e.Completion.WorkerID, e.Completion.Model, e.Completion.ModelDigest}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e)
	}
	now := p.cfg.Clock.Now()
	largest := p.provers[len(p.provers)-1].Capacity
	var out []*ledger.Batch
	for _, k := range order {
		g := groups[k]
		for len(g) > 0 {
			take := min(len(g), largest)
			if take < largest && now.Sub(g[0].RecordedAt) < p.cfg.MaxAge {
				break
			}
			b := &ledger.Batch{WorkerID: k.worker, Model: k.model, ModelDigest: k.digest, Capacity: p.fit(take), CreatedAt: now}
			for _, e := range g[:take] {
				b.Receipts = append(b.Receipts, e.ID)
			}
			out = append(out, b)
			g = g[take:]
		}
	}
	return out
}

// keyRescan is how often the key directory is scanned for capacities set
// up after start (e.g. `tollgate dev` starts with the smallest and sets up
// larger ones in the background).
const keyRescan = 30 * time.Second

func (p *Pipeline) refreshKeys() {
	now := p.cfg.Clock.Now()
	if now.Sub(p.loaded) < keyRescan || len(p.provers) == len(zk.Capacities) {
		return
	}
	p.loaded = now
	have := map[int]bool{}
	for _, pr := range p.provers {
		have[pr.Capacity] = true
	}
	for _, c := range zk.Capacities {
		pkPath, vkPath := zk.KeyFiles(p.cfg.KeyDir, c)
		if have[c] || !exists(pkPath) || !exists(vkPath) {
			continue
		}
		pr, err := zk.LoadProverWith(p.cfg.KeyDir, c, p.cfg.Child)
		if err != nil {
			p.logger.Warn("new proving key not loaded", "capacity", c, "err", err)
			continue
		}
		p.provers = append(p.provers, pr)
		p.logger.Info("proving key loaded", "capacity", c)
	}
	sort.Slice(p.provers, func(i, j int) bool { return p.provers[i].Capacity < p.provers[j].Capacity })
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// fit is the smallest capacity holding n leaves.
func (p *Pipeline) fit(n int) int {
	i := sort.Search(len(p.provers), func(i int) bool { return p.provers[i].Capacity >= n })
	return p.provers[i].Capacity
}

func (p *Pipeline) proverFor(capacity int) *zk.Prover {
	for _, pr := range p.provers {
		if pr.Capacity == capacity {
			return pr
		}
	}
	return nil
}

// attempt tries an open batch if neither it nor its worker is waiting,
// and re-cuts it once it has waited GiveUpAfter since its first offer. It
// returns how many receipts it proved and whether the batch is settled (no
// longer open: proven, re-cut, or finished by another prover); an unsettled
// batch is tried again later.
func (p *Pipeline) attempt(ctx context.Context, b *ledger.Batch) (int, bool, error) {
	now := p.cfg.Clock.Now()
	if p.givenUp(b, now) {
		return 0, true, p.giveUp(ctx, b)
	}
	if !p.retry.ready(b, now) {
		// Its worker is not answering: show why on its receipts (one
		// write, when the reason changes).
		if w, ok := p.retry.workerWaiting(b.WorkerID, now); ok && b.PendingReason != w.reason {
			b.PendingReason = w.reason
			return 0, false, p.store.UpdateBatch(ctx, b)
		}
		return 0, false, nil
	}
	return p.prove(ctx, b)
}

func (p *Pipeline) givenUp(b *ledger.Batch, now time.Time) bool {
	return !b.OfferedAt.IsZero() && now.Sub(b.OfferedAt) >= p.cfg.GiveUpAfter
}

// giveUp re-cuts a batch that has waited too long: its receipts go back
// to the pool, pending, to be batched again once the worker answers.
func (p *Pipeline) giveUp(ctx context.Context, b *ledger.Batch) error {
	reason := fmt.Sprintf("batch %d was re-cut: worker %s had not countersigned it %s after it was first offered (%d attempts; last: %s); waiting to be batched again",
		b.Seq, b.WorkerID, p.cfg.GiveUpAfter, b.Attempts, b.PendingReason)
	p.retry.done(b.Seq)
	p.cfg.Obs.Metrics().RecordCountersign(ctx, obs.CountersignRecut)
	err := p.store.RecutBatch(ctx, b, reason, nil)
	if errors.Is(err, ledger.ErrNotOpen) {
		return nil // another prover finished or re-cut it
	}
	if err == nil {
		p.logger.Warn("batch re-cut: its worker has not countersigned it", "worker", b.WorkerID, "batch", b.Seq,
			"leaves", len(b.Receipts), "offered_at", b.OfferedAt, "attempts", b.Attempts)
	}
	return err
}

// wait records why b could not be countersigned or proven now on the
// batch (durably, so pending_reason shows it and a restart keeps
// OfferedAt). The batch stays open; the backoff says when to try again.
func (p *Pipeline) wait(ctx context.Context, b *ledger.Batch, w waiting) (int, bool, error) {
	b.Attempts++
	b.PendingReason = w.reason
	return 0, false, p.store.UpdateBatch(ctx, b)
}

// prove countersigns and proves an assigned batch and stores the outcome.
// What stops it now (the worker not answering, a countersignature that
// does not check, a proving error) leaves it open to be tried again; only
// records the worker refuses are failed, the rest of a refused batch
// batched again (see refused).
func (p *Pipeline) prove(ctx context.Context, b *ledger.Batch) (int, bool, error) {
	log := p.logger.With("worker", b.WorkerID, "model", b.Model, "batch", b.Seq, "leaves", len(b.Receipts))
	var span obs.Span // the batch's span once its entries are read
	defer func() { span.End() }()
	stuck := func(reason error) (int, bool, error) {
		if ctx.Err() != nil {
			return 0, false, nil // stopping: nothing to record
		}
		span.SetError(reason)
		w := p.retry.failBatch(b.Seq, p.cfg.Clock.Now(), func(waiting) string { return fmt.Sprintf("batch %d is not proven yet: %v", b.Seq, reason) })
		log.Error("batch not proven; it waits and will be tried again", "err", privateDetail(reason), "attempts", w.failures)
		return p.wait(ctx, b, w)
	}
	pr := p.proverFor(b.Capacity)
	if pr == nil {
		return stuck(fmt.Errorf("no proving key for capacity %d", b.Capacity))
	}
	entries, err := p.store.Entries(ctx, b.Receipts)
	if err != nil {
		return 0, false, err
	}
	if p.cfg.Obs.Tracing() {
		tps := make([]string, len(entries))
		for i, e := range entries {
			tps[i] = e.Traceparent
		}
		ctx, span = p.cfg.Obs.StartLinked(ctx, "prover.batch", tps)
		span.SetInt("tollgate.batch.seq", int(b.Seq))
		span.SetInt("tollgate.batch.leaves", len(entries))
		span.SetInt("tollgate.batch.capacity", b.Capacity)
		span.SetWorker(b.WorkerID)
		span.SetString("gen_ai.request.model", b.Model)
	}
	weights, err := receipts.ParseDigest(b.ModelDigest)
	if err != nil {
		return stuck(err)
	}
	mv := receipts.ModelVersionCommitment(b.Model, weights)
	// The batch is proven against the registry root in force when it was
	// cut, with the worker's admission path in that root.
	batchTime := b.CreatedAt.UTC()
	adm, err := p.ledger.AdmissionAt(ctx, batchTime, b.WorkerID, mv)
	if errors.Is(err, ledger.ErrNotAdmitted) {
		return stuck(fmt.Errorf("model %s@%s: %w", b.Model, b.ModelDigest, err)) // waits (with backoff), reason on the receipt
	}
	if err != nil {
		return 0, false, err
	}
	zb := &zk.Batch{Capacity: b.Capacity, ModelVersion: mv, RegistryRoot: adm.Root, RegistryIndex: adm.Index, RegistryPath: adm.Path,
		Sequence: b.Seq, Time: batchTime}
	req := &workers.CountersignRequest{Sequence: b.Seq, Capacity: b.Capacity, Model: b.Model, ModelDigest: b.ModelDigest, Time: batchTime}
	for _, e := range entries {
		r := &receipts.Receipt{RequestID: e.Completion.RequestID, RequestDigest: e.Completion.RequestDigest,
			ResponseDigest: e.Completion.ResponseDigest, Subject: e.Completion.Subject, Time: e.Completion.Time,
			Model: e.Completion.Model, ModelDigest: e.Completion.ModelDigest,
			PromptTokens: uint64(e.Completion.PromptTokens), CompletionTokens: uint64(e.Completion.CompletionTokens)}
		rc, _, _, err := r.LeafFields()
		if err != nil {
			return stuck(fmt.Errorf("receipt %s: %w", e.ID, err))
		}
		zb.Leaves = append(zb.Leaves, zk.LeafInput{RequestCommitment: rc, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens})
		req.Completions = append(req.Completions, *e.Completion)
	}
	root, err := zb.Root()
	if err != nil {
		return stuck(err)
	}

	if b.OfferedAt.IsZero() {
		b.OfferedAt = p.cfg.Clock.Now() // stored with the first failure, if any
	}
	resp, err := p.cfg.Countersign(ctx, b.WorkerID, req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, nil // stopping: the batch stays as it is
		}
		var re *workers.RefusedError
		if errors.As(err, &re) {
			p.retry.answered(b.WorkerID)
			p.cfg.Obs.Metrics().RecordCountersign(ctx, obs.CountersignRefused)
			return p.refused(ctx, b, entries, re)
		}
		outcome := countersignOutcome(err)
		p.cfg.Obs.Metrics().RecordCountersign(ctx, outcome)
		now := p.cfg.Clock.Now()
		w := p.retry.failWorker(b.WorkerID, now, func(w waiting) string { return waitReason(b.WorkerID, outcome, w) })
		log.Warn("countersign failed; the batch waits", "outcome", outcome, "err", err, "attempts", w.failures, "retry_after", w.until.Sub(now))
		return p.wait(ctx, b, w)
	}
	p.retry.answered(b.WorkerID)
	p.cfg.Obs.Metrics().RecordCountersign(ctx, obs.CountersignSigned)
	pub, sig, err := checkCountersign(resp, b.WorkerID, root, mv, zb, req)
	if err != nil {
		return stuck(fmt.Errorf("the worker's countersignature does not check: %w", err))
	}
	zb.PublicKey, zb.Signature = pub, sig
	if ctx.Err() != nil {
		return 0, false, nil // stopping: the worker will answer the same again
	}

	start := time.Now() // proving is CPU work: wall time, not the injected clock
	_, pspan := p.cfg.Obs.Start(ctx, "zk.prove", obs.KindInternal)
	proof, public, err := pr.Prove(zb)
	pspan.SetError(err)
	pspan.End()
	p.cfg.Obs.Metrics().RecordProving(ctx, time.Since(start), err == nil)
	if ctx.Err() != nil {
		// Stopped while proving: store nothing, as a killed process would
		// not; the batch stays open for the next pass or another prover.
		return 0, false, nil
	}
	if err != nil {
		// The receipt's pending reason is read by its customer: the
		// proof's own error (key file paths, a proving child's text) goes
		// to the operator's log only.
		return stuck(privateError{err: err, public: "the proof failed; the operator's log has the reason"})
	}
	leaves, _ := zbLeaves(zb)
	b.Status, b.Public, b.Proof, b.VKID, b.Circuit = receipts.StatusProven, &public, proof, pr.VK.ID, pr.VK.Header.Circuit
	b.Signature, b.Leaves, b.ProvenAt = resp.Signature, leaves, p.cfg.Clock.Now()
	b.PendingReason = ""
	if err := p.store.FinishBatch(ctx, b); err != nil {
		return 0, false, err
	}
	p.retry.done(b.Seq)
	log.Info("batch proven", "capacity", b.Capacity, "prove_ms", time.Since(start).Milliseconds(), "repeated", resp.Repeated)
	return len(b.Receipts), true, nil
}

// refused acts on the worker's explicit refusal of some of b's records:
//
//   - a record refused for what it is (unknown to the worker, different
//     from its record, aged out of its store, ...) fails, with the worker's
//     reason: it can never be countersigned;
//   - a record the worker already countersigned into another batch P
//     belongs to P: b is re-cut and P, if it was re-cut, is reopened as it
//     was signed (ReviveBatch), so the worker answers it with its stored
//     signature and P is proven; a P this ledger does not hold fails the
//     record (it can never be signed again);
//   - every other record of b goes back to the pool, to be batched again.
func (p *Pipeline) refused(ctx context.Context, b *ledger.Batch, entries []*ledger.Entry, re *workers.RefusedError) (int, bool, error) {
	byRequest := map[string][]string{} // request ID → receipt IDs, in leaf order
	for _, e := range entries {
		byRequest[e.Completion.RequestID] = append(byRequest[e.Completion.RequestID], e.ID)
	}
	failed := map[string]string{}
	var revive []uint64
	var bug []string
	for _, r := range re.Records {
		ids := byRequest[r.RequestID]
		switch {
		case len(ids) == 0:
			continue // not a record of this batch
		case r.Code == workers.RefuseAlreadyCountersigned && r.Sequence == b.Seq:
			// Signed under this very sequence with another root or
			// message: the batch changed after it was offered.
			bug = append(bug, r.Reason)
		case r.Code == workers.RefuseAlreadyCountersigned:
			prior, err := p.store.GetBatch(ctx, r.Sequence)
			if errors.Is(err, ledger.ErrNoBatch) {
				for _, id := range ids {
					failed[id] = fmt.Sprintf("the worker refused to countersign it again: %s, a batch this ledger does not hold", r.Reason)
				}
				continue
			}
			if err != nil {
				return 0, false, err
			}
			switch {
			case prior.Status == ledger.StatusRecut && !slicesContains(revive, prior.Seq):
				revive = append(revive, prior.Seq)
			case prior.Status == receipts.StatusProven || prior.Status == receipts.StatusFailed:
				// A second record of one request (a ledger written before
				// request IDs were unique): the request is billed in prior.
				for _, id := range ids {
					failed[id] = fmt.Sprintf("a second record of request %q, which batch %d already holds (%s): %s", r.RequestID, prior.Seq, prior.Status, r.Reason)
				}
			}
		case r.Code == workers.RefuseDuplicateInBatch:
			for _, id := range ids[1:] { // the first of them is the record
				failed[id] = "the worker refused to countersign it: " + r.Reason
			}
		default:
			for _, id := range ids {
				failed[id] = fmt.Sprintf("the worker refused to countersign it (%s): %s", r.Code, r.Reason)
			}
		}
	}
	if len(bug) > 0 {
		w := p.retry.failBatch(b.Seq, p.cfg.Clock.Now(), func(waiting) string {
			return "the worker signed this batch's sequence over other contents: " + strings.Join(bug, "; ")
		})
		p.logger.Error("countersign conflict on the batch's own sequence; the batch waits", "batch", b.Seq, "worker", b.WorkerID, "reason", w.reason)
		return p.wait(ctx, b, w)
	}
	if len(failed) == 0 && len(revive) == 0 && len(re.Records) == 0 {
		// A refusal that names no record (an older worker): all of them.
		for _, e := range entries {
			failed[e.ID] = "the worker refused to countersign it: " + re.Err.Message
		}
	}
	reason := fmt.Sprintf("batch %d was re-cut: worker %s refused %d of its %d records; waiting to be batched again", b.Seq, b.WorkerID, len(failed), len(b.Receipts))
	if len(revive) > 0 {
		reason = fmt.Sprintf("batch %d was re-cut: the worker had countersigned some of its records in batch %v, which is reopened", b.Seq, revive)
	}
	p.retry.done(b.Seq)
	if err := p.store.RecutBatch(ctx, b, reason, failed); err != nil {
		if errors.Is(err, ledger.ErrNotOpen) {
			return 0, true, nil // another prover finished or re-cut it
		}
		return 0, false, err
	}
	p.logger.Warn("worker refused records; they fail and the rest of the batch is batched again", "worker", b.WorkerID, "batch", b.Seq,
		"failed", len(failed), "leaves", len(b.Receipts), "reopen", revive, "first", re.Err.Message)
	for _, seq := range revive {
		rb, err := p.store.ReviveBatch(ctx, seq)
		if err != nil {
			// Some of its receipts are still in another open batch: that
			// one's refusal revives it.
			p.logger.Info("countersigned batch not reopened yet", "batch", seq, "err", err)
			continue
		}
		p.cfg.Obs.Metrics().RecordCountersign(ctx, obs.CountersignRevived)
		p.logger.Info("reopened a re-cut batch the worker had countersigned", "batch", rb.Seq, "worker", rb.WorkerID, "leaves", len(rb.Receipts))
	}
	return 0, true, nil
}

func slicesContains(s []uint64, v uint64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func checkCountersign(resp *workers.CountersignResponse, workerID string, root, mv fr.Element, zb *zk.Batch, req *workers.CountersignRequest) (*eddsa.PublicKey, []byte, error) {
	if resp.Root != receipts.ElementHex(root) {
		return nil, nil, fmt.Errorf("worker signed root %s, batch root is %s", resp.Root, receipts.ElementHex(root))
	}
	rawPub, err := base64.StdEncoding.DecodeString(resp.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("worker public key: %w", err)
	}
	var pub eddsa.PublicKey
	if _, err := pub.SetBytes(rawPub); err != nil {
		return nil, nil, fmt.Errorf("worker public key: %w", err)
	}
	if id := receipts.WorkerID(&pub); id != workerID {
		return nil, nil, fmt.Errorf("worker key hashes to %s, batch is for %s", id, workerID)
	}
	sig, err := base64.StdEncoding.DecodeString(resp.Signature)
	if err != nil {
		return nil, nil, fmt.Errorf("worker signature: %w", err)
	}
	var tp, tc uint64
	for _, l := range zb.Leaves {
		tp += l.PromptTokens
		tc += l.CompletionTokens
	}
	msg := receipts.BatchMessageV2(root, mv, uint64(len(zb.Leaves)), tp, tc, req.Sequence, uint64(req.Time.UnixNano()))
	if err := receipts.VerifyBatchSignature(&pub, msg, sig); err != nil {
		return nil, nil, err
	}
	return &pub, sig, nil
}

func zbLeaves(zb *zk.Batch) ([]string, error) {
	out := make([]string, zb.Capacity)
	for i := range out {
		var h fr.Element
		if i < len(zb.Leaves) {
			var err error
			if h, err = receipts.Leaf(zb.Leaves[i].RequestCommitment, zb.Leaves[i].PromptTokens, zb.Leaves[i].CompletionTokens); err != nil {
				return nil, err
			}
		}
		out[i] = receipts.ElementHex(h)
	}
	return out, nil
}
