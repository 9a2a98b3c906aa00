package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// RegistryKeyID is the key ID under which VerifyingKey serves the legacy v1
// model registry (JSON: current root, every root it had, and the
// versions), which v1 receipts were proven against. The v2 admission
// registry's signed root history is RootHistory.
const RegistryKeyID = "registry"

// Options configure a Ledger.
type Options struct {
	// KeyDir holds the verifying keys (batch-N.vk) served by VerifyingKey.
	KeyDir string
	Logger *slog.Logger
	Clock  clock.Clock // stamps RecordedAt; default clock.Real
	// Metrics records each write's latency (nil: off).
	Metrics *obs.Metrics
	// Operator signs the admission registry's root history (AdmitWorker,
	// Revoke) and its published head. Without it the registry can be read
	// but not changed.
	Operator *receipts.OperatorKey
}

// Ledger records completions as receipts and serves them; it satisfies
// the gateway's Ledger interface.
type Ledger struct {
	store  Store
	opts   Options
	logger *slog.Logger

	mu   sync.Mutex
	keys map[string][]byte // vk ID → file; loaded lazily, reloaded on a miss
	adm  admissionCache
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
func (l *Ledger) Record(ctx context.Context, receiptID string, c *task.Completion) error {
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
func ValidateCompletion(receiptID string, c *task.Completion) error {
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
	if err := r.CheckEncoding(); err != nil { // lowercase digests: the receipt must parse strictly
		return err
	}
	return r.CheckLeafFields()
}

// RecordVoid stores a void receipt: an ID handed to a client whose request
// served nothing billable. It returns once the entry is durable; the ID
// then resolves to status "void" with v.Reason, and is never proven.
func (l *Ledger) RecordVoid(ctx context.Context, receiptID string, v *task.Void) error {
	switch {
	case receiptID == "" || len(receiptID) > 128:
		return apierr.Internal(fmt.Errorf("record void receipt: bad receipt ID %q", receiptID))
	case v == nil || v.RequestID == "" || v.Reason == "":
		return apierr.Internal(fmt.Errorf("record void receipt %s: request ID and reason are required", receiptID))
	}
	cp := *v
	now := l.opts.Clock.Now()
	err := l.store.Append(ctx, []*Entry{{ID: receiptID, Void: &cp, RecordedAt: now, Traceparent: obs.Traceparent(ctx)}})
	l.opts.Metrics.RecordLedgerWrite(ctx, l.opts.Clock.Now().Sub(now), err == nil)
	if err != nil {
		return apierr.Internal(fmt.Errorf("record void receipt %s: %w", receiptID, err))
	}
	return nil
}

func receiptOf(e *Entry) *receipts.Receipt {
	if v := e.Void; v != nil && e.Completion == nil {
		return &receipts.Receipt{
			Version: receipts.Version, ID: e.ID, Status: receipts.StatusVoid, Error: v.Reason,
			RequestID: v.RequestID, RequestDigest: v.RequestDigest, Subject: v.Subject, Time: v.Time, Model: v.Model,
		}
	}
	c := e.Completion
	r := &receipts.Receipt{
		Version: receipts.Version, ID: e.ID, Status: receipts.StatusPending,
		RequestID: c.RequestID, RequestDigest: c.RequestDigest, ResponseDigest: c.ResponseDigest,
		Subject: c.Subject, Time: c.Time.UTC(), Model: c.Model, ModelDigest: c.ModelDigest, WorkerID: c.WorkerID,
		PromptTokens: uint64(max(c.PromptTokens, 0)), CompletionTokens: uint64(max(c.CompletionTokens, 0)),
		FinishReason: c.FinishReason,
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

// render builds a receipt's JSON from its entry and batch. A subject's
// own view (own) gives the entry's cursor in that subject's export.
func render(e *Entry, b *Batch, trees treeCache, own bool) (*receipts.Receipt, error) {
	// A stored entry is outside input once read back (a damaged file, a
	// shared Redis): refuse what would panic below.
	if e.Completion == nil && e.Void == nil {
		return nil, fmt.Errorf("receipt %s has neither a completion record nor a void reason", e.ID)
	}
	r := receiptOf(e)
	switch {
	case !own:
		r.Cursor = strconv.FormatUint(e.Seq, 10)
	case e.SubjectSeq != 0:
		r.Cursor = strconv.FormatUint(e.SubjectSeq, 10)
	}
	if r.Status == receipts.StatusVoid {
		return r, nil
	}
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
	if e.Index < 0 || e.Index >= len(b.Leaves) || b.Public == nil || len(b.Leaves) != b.Capacity {
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
		Signature: b.Signature, Proof: b.Proof, VerifyingKeyID: b.VKID, ProvenAt: b.ProvenAt.UTC(),
	}
	if cd, err := receipts.Calldata(r.Batch); err == nil { // v2 batches only
		r.Batch.Calldata = cd
	}
	return r, nil
}

// Receipt returns a receipt's JSON, or an apierr 404.
func (l *Ledger) Receipt(ctx context.Context, id string) (json.RawMessage, error) {
	return l.receipt(ctx, id, "", false)
}

// errNoReceipt is the 404 for a receipt that does not exist or is not the
// caller's: the two are indistinguishable, so receipt IDs do not leak.
func errNoReceipt(id string) error {
	return apierr.NotFound("id", "receipt_not_found", "no receipt %q", id)
}

// ReceiptOf is Receipt for one subject (an API key ID): a receipt of
// another subject is a 404, exactly as an unknown one. Its cursor is its
// position in the subject's own export (ExportOf).
func (l *Ledger) ReceiptOf(ctx context.Context, subject, id string) (json.RawMessage, error) {
	if subject == "" {
		return nil, apierr.Internal(errors.New("ledger: ReceiptOf needs a subject"))
	}
	return l.receipt(ctx, id, subject, true)
}

func (l *Ledger) receipt(ctx context.Context, id, subject string, own bool) (json.RawMessage, error) {
	e, b, err := l.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if own && e.Subject() != subject {
		return nil, errNoReceipt(id)
	}
	r, err := render(e, b, treeCache{}, own)
	if err != nil {
		return nil, apierr.Internal(err)
	}
	if r.Audit, err = l.auditState(ctx, id); err != nil {
		return nil, apierr.Internal(err)
	}
	return json.Marshal(r)
}

// Export lists up to limit receipts after the cursor (empty: from the
// start), in ledger order. next is the cursor for the following page,
// empty when this page reaches the end (a later call with the last item's
// cursor picks up receipts recorded since).
func (l *Ledger) Export(ctx context.Context, after string, limit int) ([]json.RawMessage, string, error) {
	return l.export(ctx, after, limit, func(from uint64, n int) ([]*Entry, map[uint64]*Batch, error) {
		return l.store.List(ctx, from, n)
	}, false)
}

// ExportOf is Export of one subject's receipts only, read from the
// store's per-subject index (Store.ListSubject): a page costs the same
// however much other keys record, and its cursors count only the
// subject's own receipts, so they say nothing of other keys' traffic.
func (l *Ledger) ExportOf(ctx context.Context, subject, after string, limit int) ([]json.RawMessage, string, error) {
	if subject == "" {
		return nil, "", apierr.Internal(errors.New("ledger: ExportOf needs a subject"))
	}
	return l.export(ctx, after, limit, func(from uint64, n int) ([]*Entry, map[uint64]*Batch, error) {
		return l.store.ListSubject(ctx, subject, from, n)
	}, true)
}

func (l *Ledger) export(ctx context.Context, after string, limit int, list func(uint64, int) ([]*Entry, map[uint64]*Batch, error), own bool) ([]json.RawMessage, string, error) {
	var from uint64
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return nil, "", apierr.BadRequest("after", "invalid_value", "Invalid 'after': not a cursor from a previous page.")
		}
		from = n
	}
	limit = min(max(limit, 1), 1000)
	entries, batches, err := list(from, limit+1) // one more tells whether a next page exists
	if err != nil {
		return nil, "", apierr.Internal(err)
	}
	more := len(entries) > limit
	entries = entries[:min(len(entries), limit)]
	out := make([]json.RawMessage, 0, len(entries))
	trees := treeCache{}
	for _, e := range entries {
		r, err := render(e, batches[e.BatchSeq], trees, own)
		if err != nil {
			return nil, "", apierr.Internal(err)
		}
		if r.Audit, err = l.auditState(ctx, e.ID); err != nil {
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
		last := entries[len(entries)-1]
		next = strconv.FormatUint(last.Seq, 10)
		if own {
			next = strconv.FormatUint(last.SubjectSeq, 10)
		}
	}
	return out, next, nil
}

// VerifyingKey returns a verifying key file by ID (see receipts.KeyID), or
// the registry JSON for RegistryKeyID, or an apierr 404.
func (l *Ledger) VerifyingKey(ctx context.Context, id string) ([]byte, error) {
	if id == RegistryKeyID {
		b, err := l.store.Meta(ctx, metaRegistry)
		if err != nil {
			return nil, apierr.Internal(err)
		}
		if b == nil {
			b = []byte(`{"root":"","roots":[],"versions":[]}`)
		}
		return b, nil
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
// worker at registration (task.Registered.CountersignToken), beside its
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
