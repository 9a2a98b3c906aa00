package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers"
)

// RegistryKeyID is the key ID under which VerifyingKey serves the model
// registry (JSON: current root, every root it ever had, and the versions),
// so `tollgate verify --gateway` can fetch the trusted roots.
const RegistryKeyID = "registry"

// Options configure a Ledger.
type Options struct {
	// KeyDir holds the verifying keys (batch-N.vk) served by VerifyingKey.
	KeyDir string
	Logger *slog.Logger
	Clock  clock.Clock // stamps RecordedAt; default clock.Real
	// Metrics records each write's latency (nil: off).
	Metrics *obs.Metrics
}

// Ledger records completions as receipts and serves them; it satisfies
// the gateway's Ledger interface.
type Ledger struct {
	store  Store
	opts   Options
	logger *slog.Logger

	mu       sync.Mutex
	keys     map[string][]byte // vk ID → file; loaded lazily, reloaded on a miss
	registry *registryState
}

// New returns a ledger over store.
func New(store Store, opts Options) *Ledger {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	return &Ledger{store: store, opts: opts, logger: opts.Logger}
}

// Store is the ledger's store (for the prover).
func (l *Ledger) Store() Store { return l.store }

// Logger is the ledger's logger.
func (l *Ledger) Logger() *slog.Logger { return l.logger }

// Record validates c and stores it as a pending receipt; it returns once
// the receipt is durable.
func (l *Ledger) Record(ctx context.Context, receiptID string, c *workers.Completion) error {
	if err := ValidateCompletion(receiptID, c); err != nil {
		return apierr.Internal(fmt.Errorf("record receipt %s: %w", receiptID, err))
	}
	cp := *c
	now := l.opts.Clock.Now()
	err := l.store.Append(ctx, []*Entry{{ID: receiptID, Completion: &cp, RecordedAt: now, Traceparent: obs.Traceparent(ctx)}})
	l.opts.Metrics.RecordLedgerWrite(ctx, l.opts.Clock.Now().Sub(now), err == nil)
	if err != nil {
		return apierr.Internal(fmt.Errorf("record receipt %s: %w", receiptID, err))
	}
	return nil
}

// ValidateCompletion checks that a completion record can become a leaf.
func ValidateCompletion(receiptID string, c *workers.Completion) error {
	if receiptID == "" || len(receiptID) > 128 {
		return fmt.Errorf("bad receipt ID %q", receiptID)
	}
	if c == nil {
		return fmt.Errorf("no completion record")
	}
	if c.PromptTokens < 0 || c.CompletionTokens < 0 || c.PromptTokens > receipts.MaxTokens || c.CompletionTokens > receipts.MaxTokens {
		return fmt.Errorf("token counts %d/%d out of range", c.PromptTokens, c.CompletionTokens)
	}
	if _, err := receipts.ParseElement(c.WorkerID); err != nil {
		return fmt.Errorf("worker_id: %w", err)
	}
	r := receiptOf(&Entry{ID: receiptID, Completion: c})
	_, _, _, err := r.LeafFields()
	return err
}

func receiptOf(e *Entry) *receipts.Receipt {
	c := e.Completion
	r := &receipts.Receipt{
		Version: receipts.Version, ID: e.ID, Status: receipts.StatusPending,
		RequestID: c.RequestID, RequestDigest: c.RequestDigest, ResponseDigest: c.ResponseDigest,
		Subject: c.Subject, Time: c.Time, Model: c.Model, ModelDigest: c.ModelDigest, WorkerID: c.WorkerID,
		PromptTokens: uint64(max(c.PromptTokens, 0)), CompletionTokens: uint64(max(c.CompletionTokens, 0)),
	}
	return r
}

// treeCache keeps the Merkle trees of the batches one render pass touches.
type treeCache map[uint64]receipts.MerkleTree

func (c treeCache) tree(b *Batch) (receipts.MerkleTree, error) {
	if t, ok := c[b.Seq]; ok {
		return t, nil
	}
	leaves := make([]fr.Element, len(b.Leaves))
	for i, s := range b.Leaves {
		var err error
		if leaves[i], err = receipts.ParseElement(s); err != nil {
			return nil, fmt.Errorf("batch %d leaf %d: %w", b.Seq, i, err)
		}
	}
	t := receipts.NewMerkleTree(leaves)
	c[b.Seq] = t
	return t, nil
}

// render builds a receipt's JSON from its entry and batch.
func render(e *Entry, b *Batch, trees treeCache) (*receipts.Receipt, error) {
	r := receiptOf(e)
	r.Cursor = strconv.FormatUint(e.Seq, 10)
	if _, mv, leaf, err := r.LeafFields(); err == nil {
		r.ModelVersion, r.Leaf = receipts.ElementHex(mv), receipts.ElementHex(leaf)
	}
	if e.Failure != "" {
		r.Status, r.Error = receipts.StatusFailed, e.Failure
		return r, nil
	}
	if b == nil || b.Status != receipts.StatusProven && b.Status != receipts.StatusFailed {
		r.PendingReason = e.PendingReason
		if b != nil && b.PendingReason != "" {
			r.PendingReason = b.PendingReason
		}
		return r, nil
	}
	r.Status = b.Status
	if b.Status == receipts.StatusFailed {
		r.Error = b.Error
		return r, nil
	}
	if e.Index >= len(b.Leaves) || b.Public == nil || len(b.Leaves) != b.Capacity {
		return nil, fmt.Errorf("batch %d is missing leaf %d", b.Seq, e.Index)
	}
	tree, err := trees.tree(b)
	if err != nil {
		return nil, err
	}
	path := tree.Path(e.Index)
	hex := make([]string, len(path))
	for i, p := range path {
		hex[i] = receipts.ElementHex(p)
	}
	r.Batch = &receipts.BatchProof{
		Circuit: b.Circuit, Capacity: b.Capacity, Index: uint64(e.Index), Path: hex, Public: *b.Public,
		Signature: b.Signature, Proof: b.Proof, VerifyingKeyID: b.VKID, ProvenAt: b.ProvenAt,
	}
	return r, nil
}

// Receipt returns a receipt's JSON, or an apierr 404.
func (l *Ledger) Receipt(ctx context.Context, id string) (json.RawMessage, error) {
	e, b, err := l.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	r, err := render(e, b, treeCache{})
	if err != nil {
		return nil, apierr.Internal(err)
	}
	return json.Marshal(r)
}

// Export lists up to limit receipts after the cursor (empty: from the
// start), in ledger order. next is the cursor for the following page,
// empty when this page reaches the end (a later call with the last item's
// cursor picks up receipts recorded since).
func (l *Ledger) Export(ctx context.Context, after string, limit int) ([]json.RawMessage, string, error) {
	var from uint64
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return nil, "", apierr.BadRequest("after", "invalid_value", "Invalid 'after': not a cursor from a previous page.")
		}
		from = n
	}
	limit = min(max(limit, 1), 1000)
	entries, batches, err := l.store.List(ctx, from, limit+1) // one more tells whether a next page exists
	if err != nil {
		return nil, "", apierr.Internal(err)
	}
	more := len(entries) > limit
	entries = entries[:min(len(entries), limit)]
	out := make([]json.RawMessage, 0, len(entries))
	trees := treeCache{}
	for _, e := range entries {
		r, err := render(e, batches[e.BatchSeq], trees)
		if err != nil {
			return nil, "", apierr.Internal(err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, "", apierr.Internal(err)
		}
		out = append(out, b)
	}
	next := ""
	if more {
		next = strconv.FormatUint(entries[len(entries)-1].Seq, 10)
	}
	return out, next, nil
}

// VerifyingKey returns a verifying key file by ID (see receipts.KeyID), or
// the registry JSON for RegistryKeyID, or an apierr 404.
func (l *Ledger) VerifyingKey(ctx context.Context, id string) ([]byte, error) {
	if id == RegistryKeyID {
		st, err := l.loadRegistry(ctx)
		if err != nil {
			return nil, apierr.Internal(err)
		}
		return json.Marshal(st)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.keys[id]; ok {
		return b, nil
	}
	if err := l.loadKeysLocked(); err != nil {
		return nil, apierr.Internal(err)
	}
	if b, ok := l.keys[id]; ok {
		return b, nil
	}
	return nil, apierr.NotFound("id", "key_not_found", "No verifying key with that ID.")
}

func (l *Ledger) loadKeysLocked() error {
	l.keys = map[string][]byte{}
	if l.opts.KeyDir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(l.opts.KeyDir, "*.vk"))
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		vk, err := receipts.ParseVerifyingKey(b)
		if err != nil {
			l.logger.Warn("skipping verifying key", "file", f, "err", err)
			continue
		}
		l.keys[vk.ID] = b
	}
	return nil
}

// RegistryEntry is one registered model version; with Worker set it is
// also an admitted (worker, model version) pair, a leaf of the v2
// admission registry (receipts.AdmissionLeaf).
type RegistryEntry struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	Commitment string `json:"commitment"`
	Worker     string `json:"worker,omitempty"`
}

type registryState struct {
	Root     string          `json:"root"`
	Roots    []string        `json:"roots"` // every root the registry has had, oldest first
	Versions []RegistryEntry `json:"versions"`
}

const metaRegistry = "registry"

func (l *Ledger) loadRegistry(ctx context.Context) (*registryState, error) {
	st, _, err := l.loadRegistryRaw(ctx)
	return st, err
}

// loadRegistryRaw is loadRegistry that also returns the stored bytes, for
// a compare-and-swap of the next state.
func (l *Ledger) loadRegistryRaw(ctx context.Context) (*registryState, []byte, error) {
	b, err := l.store.Meta(ctx, metaRegistry)
	if err != nil {
		return nil, nil, err
	}
	st := &registryState{}
	if b != nil {
		if err := json.Unmarshal(b, st); err != nil {
			return nil, nil, fmt.Errorf("registry: %w", err)
		}
	}
	return st, b, nil
}

// RegisterModels adds model versions to the registry (append-only; known
// versions are skipped). The gateway calls it with every version a worker
// is allowed to serve.
func (l *Ledger) RegisterModels(ctx context.Context, versions ...workers.ModelVersion) error {
	return l.register(ctx, "", versions)
}

// AdmitWorker admits a worker for model versions (append-only; known pairs
// are skipped): each pair becomes a leaf of the admission registry whose
// root v2 proofs commit to. The gateway calls it at registration.
func (l *Ledger) AdmitWorker(ctx context.Context, workerID string, versions ...workers.ModelVersion) error {
	if _, err := receipts.ParseElement(workerID); err != nil {
		return fmt.Errorf("worker ID: %w", err)
	}
	return l.register(ctx, workerID, versions)
}

func (l *Ledger) register(ctx context.Context, workerID string, versions []workers.ModelVersion) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Several gateway replicas may update a shared store's registry at
	// once: with a MetaSwapper the update is a compare-and-swap, retried on
	// a conflict, so no replica's versions are lost.
	swapper, shared := l.store.(MetaSwapper)
	for attempt := 1; ; attempt++ {
		st, raw, err := l.loadRegistryRaw(ctx)
		if err != nil {
			return err
		}
		changed := false
		for _, v := range versions {
			d, err := receipts.ParseDigest(v.Digest)
			if err != nil {
				return fmt.Errorf("model %s: %w", v.Name, err)
			}
			c := receipts.ElementHex(receipts.ModelVersionCommitment(v.Name, d))
			known := false
			for _, e := range st.Versions {
				known = known || e.Commitment == c && (workerID == "" || e.Worker == workerID)
			}
			if !known {
				st.Versions = append(st.Versions, RegistryEntry{Name: v.Name, Digest: strings.ToLower(v.Digest), Commitment: c, Worker: workerID})
				changed = true
			}
		}
		if !changed {
			return nil
		}
		reg, err := st.registry()
		if err != nil {
			return err
		}
		st.Root = receipts.ElementHex(reg.Root())
		st.Roots = append(st.Roots, st.Root)
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if !shared {
			return l.store.PutMeta(ctx, metaRegistry, b)
		}
		swapped, err := swapper.SwapMeta(ctx, metaRegistry, raw, b)
		if err != nil || swapped {
			return err
		}
		if attempt == maxRegistrySwaps {
			return fmt.Errorf("registry: %d concurrent updates in a row; try again", attempt)
		}
	}
}

// maxRegistrySwaps bounds RegisterModels's compare-and-swap retries.
const maxRegistrySwaps = 32

// registry is the v2 admission registry: one leaf per admitted (worker,
// model version) pair, in admission order. Entries without a worker
// (RegisterModels) admit nobody.
func (st *registryState) registry() (*receipts.AdmissionRegistry, error) {
	var leaves []fr.Element
	for _, e := range st.Versions {
		if e.Worker == "" {
			continue
		}
		mv, err := receipts.ParseElement(e.Commitment)
		if err != nil {
			return nil, err
		}
		w, err := receipts.ParseElement(e.Worker)
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, receipts.AdmissionLeaf(w, mv))
	}
	return receipts.NewAdmissionRegistry(leaves)
}

// Registry returns the current admission registry tree.
func (l *Ledger) Registry(ctx context.Context) (*receipts.AdmissionRegistry, error) {
	st, err := l.loadRegistry(ctx)
	if err != nil {
		return nil, err
	}
	return st.registry()
}

// RegistryRoots returns every registry root, oldest first.
func (l *Ledger) RegistryRoots(ctx context.Context) ([]string, error) {
	st, err := l.loadRegistry(ctx)
	if err != nil {
		return nil, err
	}
	return st.Roots, nil
}

// SetWorkerURL records where a worker serves countersign requests (the
// URL it registered with). The prover reads it back with WorkerURL.
func (l *Ledger) SetWorkerURL(ctx context.Context, workerID, url string) error {
	return l.store.PutMeta(ctx, "worker:"+workerID, []byte(url))
}

// WorkerURL returns a worker's recorded URL, or "".
func (l *Ledger) WorkerURL(ctx context.Context, workerID string) (string, error) {
	b, err := l.store.Meta(ctx, "worker:"+workerID)
	return string(b), err
}

// SetCountersignCredential records the credential the gateway issued to a
// worker at registration (workers.Registered.CountersignToken), beside its
// URL in the store's shared meta, so that every prover of the ledger can
// present it: the worker's countersign route accepts no one else. It is a
// secret: never log it.
func (l *Ledger) SetCountersignCredential(ctx context.Context, workerID, credential string) error {
	return l.store.PutMeta(ctx, "countersign:"+workerID, []byte(credential))
}

// CountersignCredential returns a worker's countersign credential, or "".
func (l *Ledger) CountersignCredential(ctx context.Context, workerID string) (string, error) {
	b, err := l.store.Meta(ctx, "countersign:"+workerID)
	return string(b), err
}
