// Package prover is Tollgate's receipt prover pipeline: it groups pending
// ledger leaves by worker and model version, closes a batch when it fills
// the largest circuit or its oldest leaf reaches the maximum age (choosing
// the smallest circuit that fits), has the worker countersign the batch
// root, proves the batch with zk, and stores the proof, marking the
// receipts proven. Batches are assigned durably before proving, so a
// restart resumes them and no receipt is proven twice.
//
// Wiring (as in `tollgate dev`):
//
//	st, err := ledger.OpenBolt(filepath.Join(dataDir, "receipts.db"))
//	l := ledger.New(st, ledger.Options{KeyDir: keyDir, Logger: logger})
//	err = zk.EnsureDevKeys(keyDir, 8) // seconds; set up 64 and 256 in the background, Run picks them up
//	go prover.Run(ctx, l, prover.Config{KeyDir: keyDir, Logger: logger})
//	// gateway.Deps{Ledger: l}: the gateway records the worker URLs and model
//	// versions into l at registration (SetWorkerURL, RegisterModels).
//
// and on the worker:
//
//	cs := workers.NewCountersigner(key, agent, logger) // key: *keys.Key, agent: *workers.Agent
//	h := workers.NewHandler(agent, logger, workers.WithRoute("POST "+workers.PathCountersign, cs))
package prover

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/internal/apierr"
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
	// GiveUpAfter marks a batch failed when its worker has not countersigned
	// it this long after it was closed (default 10m): a worker that is gone
	// cannot sign.
	GiveUpAfter time.Duration `yaml:"give_up_after"`

	Logger *slog.Logger `yaml:"-"`
	Clock  clock.Clock  `yaml:"-"`
	// Countersign asks a worker to sign a batch. Default: HTTP POST to the
	// worker URL recorded in the ledger (ledger.SetWorkerURL).
	Countersign func(ctx context.Context, workerID string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) `yaml:"-"`
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
		cfg.GiveUpAfter = 10 * time.Minute
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
	provers, err := zk.LoadProvers(cfg.KeyDir)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{ledger: l, store: l.Store(), cfg: cfg, provers: provers, logger: cfg.Logger, loaded: cfg.Clock.Now()}
	if p.cfg.Countersign == nil {
		client := &http.Client{Timeout: 30 * time.Second}
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
			return workers.RequestCountersign(ctx, client, url, cred, req)
		}
	}
	return p, nil
}

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
// runQueue); otherwise it is the only prover of its ledger.
func (p *Pipeline) Run(ctx context.Context) error {
	if q, ok := p.store.(ledger.Queue); ok {
		return p.runQueue(ctx, q)
	}
	tick := make(chan struct{}, 1)
	for {
		if _, err := p.Step(ctx); err != nil && ctx.Err() == nil {
			p.logger.Error("prover pass failed", "err", err)
		}
		t := p.cfg.Clock.AfterFunc(p.cfg.Interval, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-tick:
		}
	}
}

// Step makes one pass: it finishes batches left open (by a restart or a
// transient failure), then closes and proves the batches that are due. It
// returns how many receipts it proved.
func (p *Pipeline) Step(ctx context.Context) (int, error) {
	p.refreshKeys()
	proven := 0
	open, err := p.store.OpenBatches(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, b := range open {
		n, err := p.prove(ctx, b)
		proven += n
		errs = append(errs, err)
	}
	pending, err := p.store.Pending(ctx)
	if err != nil {
		return proven, err
	}
	for _, b := range p.due(pending) {
		if err := p.store.AssignBatch(ctx, b); err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := p.prove(ctx, b)
		proven += n
		errs = append(errs, err)
	}
	return proven, errors.Join(errs...)
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
		pr, err := zk.LoadProver(p.cfg.KeyDir, c)
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

// prove countersigns and proves an assigned batch and stores the outcome.
// A transient failure leaves the batch open for the next pass; a permanent
// one (refused, unregistered model, no key) marks it failed.
func (p *Pipeline) prove(ctx context.Context, b *ledger.Batch) (int, error) {
	log := p.logger.With("worker", b.WorkerID, "model", b.Model, "batch", b.Seq, "leaves", len(b.Receipts))
	var span obs.Span // the batch's span once its entries are read
	defer func() { span.End() }()
	fail := func(reason error) (int, error) {
		span.SetError(reason)
		b.Status, b.Error = receipts.StatusFailed, reason.Error()
		log.Error("batch failed", "err", reason)
		return 0, p.store.FinishBatch(ctx, b)
	}
	pr := p.proverFor(b.Capacity)
	if pr == nil {
		return fail(fmt.Errorf("no proving key for capacity %d", b.Capacity))
	}
	entries, err := p.store.Entries(ctx, b.Receipts)
	if err != nil {
		return 0, err
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
		return fail(err)
	}
	mv := receipts.ModelVersionCommitment(b.Model, weights)
	wid, err := receipts.ParseElement(b.WorkerID)
	if err != nil {
		return fail(fmt.Errorf("worker ID: %w", err))
	}
	reg, err := p.ledger.Registry(ctx)
	if err != nil {
		return 0, err
	}
	regIdx, regPath, ok := reg.Path(receipts.AdmissionLeaf(wid, mv))
	if !ok {
		return fail(fmt.Errorf("worker %s is not admitted for model version %s@%s", b.WorkerID, b.Model, b.ModelDigest))
	}
	batchTime := b.CreatedAt.UTC()
	zb := &zk.Batch{Capacity: b.Capacity, ModelVersion: mv, RegistryRoot: reg.Root(), RegistryIndex: regIdx, RegistryPath: regPath,
		Sequence: b.Seq, Time: batchTime}
	req := &workers.CountersignRequest{Sequence: b.Seq, Capacity: b.Capacity, Model: b.Model, ModelDigest: b.ModelDigest, Time: batchTime}
	for _, e := range entries {
		r := &receipts.Receipt{RequestID: e.Completion.RequestID, RequestDigest: e.Completion.RequestDigest,
			ResponseDigest: e.Completion.ResponseDigest, Subject: e.Completion.Subject, Time: e.Completion.Time,
			Model: e.Completion.Model, ModelDigest: e.Completion.ModelDigest,
			PromptTokens: uint64(e.Completion.PromptTokens), CompletionTokens: uint64(e.Completion.CompletionTokens)}
		rc, _, _, err := r.LeafFields()
		if err != nil {
			return fail(fmt.Errorf("receipt %s: %w", e.ID, err))
		}
		zb.Leaves = append(zb.Leaves, zk.LeafInput{RequestCommitment: rc, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens})
		req.Completions = append(req.Completions, *e.Completion)
	}
	root, err := zb.Root()
	if err != nil {
		return fail(err)
	}

	resp, err := p.cfg.Countersign(ctx, b.WorkerID, req)
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
			return fail(fmt.Errorf("worker refused to countersign: %w", err))
		}
		if p.cfg.Clock.Now().Sub(b.CreatedAt) > p.cfg.GiveUpAfter {
			return fail(fmt.Errorf("worker did not countersign within %s: %w", p.cfg.GiveUpAfter, err))
		}
		log.Warn("countersign failed; will retry", "err", err)
		return 0, fmt.Errorf("batch %d: %w", b.Seq, err)
	}
	pub, sig, err := checkCountersign(resp, b.WorkerID, root, mv, zb, req)
	if err != nil {
		return fail(err)
	}
	zb.PublicKey, zb.Signature = pub, sig

	start := time.Now() // proving is CPU work: wall time, not the injected clock
	_, pspan := p.cfg.Obs.Start(ctx, "zk.prove", obs.KindInternal)
	proof, public, err := pr.Prove(zb)
	pspan.SetError(err)
	pspan.End()
	p.cfg.Obs.Metrics().RecordProving(ctx, time.Since(start), err == nil)
	if ctx.Err() != nil {
		// Stopped while proving: store nothing, as a killed process would
		// not; the batch stays open for the next pass or another prover.
		return 0, fmt.Errorf("batch %d: %w", b.Seq, context.Cause(ctx))
	}
	if err != nil {
		return fail(err)
	}
	leaves, _ := zbLeaves(zb)
	b.Status, b.Public, b.Proof, b.VKID, b.Circuit = receipts.StatusProven, &public, proof, pr.VK.ID, pr.VK.Header.Circuit
	b.Signature, b.Leaves, b.ProvenAt = resp.Signature, leaves, p.cfg.Clock.Now()
	if err := p.store.FinishBatch(ctx, b); err != nil {
		return 0, err
	}
	log.Info("batch proven", "capacity", b.Capacity, "prove_ms", time.Since(start).Milliseconds())
	return len(b.Receipts), nil
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
