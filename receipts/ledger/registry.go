package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// The admission registry (v2).
//
// The registry root a v2 proof commits to is the root of a depth-16 tree
// of admitted (worker ID, model version) pairs (receipts.AdmissionLeaf).
// A pair is admitted when the gateway accepts a worker's registration for
// that model version (AdmitWorker) and removed when an admin revokes it
// (Revoke). Every change appends an entry, signed with the operator key
// (Options.Operator), to the registry root history (receipts.RootEntry),
// which the gateway publishes (RootHistory) so verifiers can pin it.
//
// State lives in one Meta value ("admission"): the admitted pairs with
// their tree slots, the admin's denials, the signed entries and, per
// entry, which slots it changed (so the tree in force at any entry can be
// rebuilt for a batch cut under it). Updates are a compare-and-swap of that
// value (every Store is a MetaSwapper), retried on conflict, so replicas
// sharing a Redis store append to one chain; they must all hold the same
// operator key, which the state records.
//
// Entry times come from the appending replica's clock (strictly after the
// previous entry's). Replicas and provers must keep their clocks in sync
// (NTP): a replica whose clock is behind could append an entry dated
// before a batch another replica has already cut, and that batch's proof
// would then be judged against the newer root. Entries are also dated
// after every head already signed (HeadsAsOf), so a fast clock delays the
// next entry rather than making two signed statements disagree.
//
// The current tree is cached and updated incrementally (16 hashes per
// changed slot); a state written by another replica is picked up by
// comparing the stored bytes and rebuilt from its pairs (16 hashes a pair).
//
// A revoked worker cannot re-admit itself by registering again: Revoke
// also records a denial, which AdmitWorker honours until an admin lifts it
// (Reinstate). Reinstating admits nothing by itself; the worker's next
// registration does.

const metaAdmission = "admission"

// Registry errors.
var (
	// ErrNotAdmitted: the pair is not in the root in force at that time.
	ErrNotAdmitted = errors.New("worker is not admitted for that model version")
	// ErrNoOperatorKey: the ledger was opened without an operator key and
	// cannot sign registry changes.
	ErrNoOperatorKey = errors.New("no operator key to sign the registry root history")
)

// RevokedError is AdmitWorker's refusal of versions an admin revoked for
// the worker; nothing was admitted.
type RevokedError struct {
	WorkerID string
	Versions []task.ModelVersion
}

func (e *RevokedError) Error() string {
	names := make([]string, len(e.Versions))
	for i, v := range e.Versions {
		names[i] = v.Name + "@" + short(v.Digest)
	}
	return fmt.Sprintf("worker %s is revoked for %s", e.WorkerID, strings.Join(names, ", "))
}

// RevokedVersions names the refused versions (the gateway drops them from
// the registration).
func (e *RevokedError) RevokedVersions() []task.ModelVersion { return e.Versions }

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// AdmittedPair is one admitted (worker, model version) pair.
type AdmittedPair struct {
	WorkerID     string    `json:"worker_id"`
	Model        string    `json:"model"`
	Digest       string    `json:"digest"`
	ModelVersion string    `json:"model_version"` // receipts.ModelVersionCommitment
	Slot         uint64    `json:"slot"`
	Since        time.Time `json:"since"` // time of the entry that admitted it
}

// Denial is an admin's revocation of a worker for a model (empty: every
// model) and digest (empty: every digest).
type Denial struct {
	WorkerID string    `json:"worker_id"`
	Model    string    `json:"model,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	At       time.Time `json:"at"`
	// Burned: the key itself was revoked (RevokeKey); no reinstating.
	Burned bool `json:"burned,omitempty"`
}

func (d *Denial) covers(workerID, model, digest string) bool {
	return d.WorkerID == workerID && (d.Model == "" || d.Model == model) && (d.Digest == "" || d.Digest == digest)
}

type slotChange struct {
	Slot uint64 `json:"slot"`
	Leaf string `json:"leaf,omitempty"` // empty: the slot was cleared
}

type admissionState struct {
	Operator string               `json:"operator"` // hex ed25519 public key signing Entries
	Pairs    []AdmittedPair       `json:"pairs"`
	Denied   []Denial             `json:"denied,omitempty"`
	Entries  []receipts.RootEntry `json:"entries"`
	Changes  [][]slotChange       `json:"changes"` // Changes[i]: the slots Entries[i] changed
	// HeadsAsOf is the latest as_of of a head any replica signed (see
	// RootHistory): a head says no entry follows the last one until its
	// as_of, so every later entry is dated after it.
	HeadsAsOf time.Time `json:"heads_as_of,omitzero"`
}

// admissionView is a parsed state with its current tree.
type admissionView struct {
	raw  []byte
	st   *admissionState
	tree *receipts.AdmissionTree // at the last entry
	past map[int]*receipts.AdmissionTree
}

// admissionCache holds the last view read or written.
type admissionCache struct {
	// updating serialises this process's updates (read, change, swap), so
	// they never race each other through the compare-and-swap, which is
	// left to settle updates from other replicas. It is a one-slot
	// semaphore so that a waiter whose context ends (a registration whose
	// worker hung up) stops waiting instead of queueing behind a slow
	// update.
	updating chan struct{}
	once     sync.Once
	mu       sync.Mutex // guards view
	view     *admissionView
}

// admission returns the stored state, from cache when the stored bytes are
// the ones cached.
func (l *Ledger) admission(ctx context.Context) (*admissionView, error) {
	raw, err := l.store.Meta(ctx, metaAdmission)
	if err != nil {
		return nil, err
	}
	l.adm.mu.Lock()
	defer l.adm.mu.Unlock()
	if v := l.adm.view; v != nil && bytes.Equal(v.raw, raw) {
		return v, nil
	}
	v, err := newAdmissionView(raw)
	if err != nil {
		return nil, err
	}
	l.adm.view = v
	return v, nil
}

func newAdmissionView(raw []byte) (*admissionView, error) {
	v := &admissionView{raw: raw, st: &admissionState{}, tree: receipts.NewAdmissionTree(), past: map[int]*receipts.AdmissionTree{}}
	if raw == nil {
		return v, nil
	}
	if err := json.Unmarshal(raw, v.st); err != nil {
		return nil, fmt.Errorf("admission registry: %w", err)
	}
	leaves := make(map[uint64]fr.Element, len(v.st.Pairs))
	for _, p := range v.st.Pairs {
		leaf, err := pairLeaf(p.WorkerID, p.ModelVersion)
		if err != nil {
			return nil, fmt.Errorf("admission registry: %w", err)
		}
		if _, dup := leaves[p.Slot]; dup {
			return nil, fmt.Errorf("admission registry: two pairs in slot %d", p.Slot)
		}
		leaves[p.Slot] = leaf
	}
	var err error
	if v.tree, err = receipts.BuildAdmissionTree(leaves); err != nil {
		return nil, fmt.Errorf("admission registry: %w", err)
	}
	if n := len(v.st.Entries); n > 0 {
		if root := receipts.ElementHex(v.tree.Root()); root != v.st.Entries[n-1].Root {
			return nil, fmt.Errorf("admission registry: pairs hash to %s, the last signed root is %s", root, v.st.Entries[n-1].Root)
		}
	}
	return v, nil
}

func pairLeaf(workerID, modelVersion string) (fr.Element, error) {
	w, err := receipts.ParseCanonicalElement(workerID)
	if err != nil {
		return fr.Element{}, fmt.Errorf("worker ID: %w", err)
	}
	mv, err := receipts.ParseCanonicalElement(modelVersion)
	if err != nil {
		return fr.Element{}, fmt.Errorf("model version: %w", err)
	}
	return receipts.AdmissionLeaf(w, mv), nil
}

// treeAt returns the tree in force at entry i (0-based), replaying the
// recorded slot changes; the last one is the cached current tree.
func (v *admissionView) treeAt(i int) (*receipts.AdmissionTree, error) {
	if i == len(v.st.Entries)-1 {
		return v.tree, nil
	}
	if t, ok := v.past[i]; ok {
		return t, nil
	}
	if len(v.st.Changes) != len(v.st.Entries) {
		return nil, fmt.Errorf("admission registry: %d entries but %d change sets", len(v.st.Entries), len(v.st.Changes))
	}
	t := receipts.NewAdmissionTree()
	for _, cs := range v.st.Changes[:i+1] {
		for _, c := range cs {
			var leaf fr.Element
			if c.Leaf != "" {
				var err error
				if leaf, err = receipts.ParseCanonicalElement(c.Leaf); err != nil {
					return nil, fmt.Errorf("admission registry: %w", err)
				}
			}
			if err := t.Set(c.Slot, leaf); err != nil {
				return nil, err
			}
		}
	}
	if root := receipts.ElementHex(t.Root()); root != v.st.Entries[i].Root {
		return nil, fmt.Errorf("admission registry: entry %d: changes hash to %s, signed root %s", i+1, root, v.st.Entries[i].Root)
	}
	if len(v.past) >= 4 {
		clear(v.past)
	}
	v.past[i] = t
	return t, nil
}

// admissionUpdate is what an update changed: slots of the tree, keys
// revoked (either appends a signed entry), or only unsigned state (write).
type admissionUpdate struct {
	changes []slotChange
	revoked []receipts.RevokedKey
	write   bool
}

// updateAdmission applies fn to a copy of the state and, if fn changed the
// tree or revoked keys, appends a signed entry for the new root; it writes
// the state by compare-and-swap, retrying fn on a conflict.
func (l *Ledger) updateAdmission(ctx context.Context, fn func(st *admissionState, tree *receipts.AdmissionTree) (admissionUpdate, error)) error {
	swapper, ok := l.store.(MetaSwapper)
	if !ok {
		return errors.New("admission registry: the store cannot compare-and-swap")
	}
	l.adm.once.Do(func() { l.adm.updating = make(chan struct{}, 1) })
	select {
	case l.adm.updating <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("admission registry: waiting for this process's other updates: %w", ctx.Err())
	}
	defer func() { <-l.adm.updating }()
	for attempt := 1; ; attempt++ {
		v, err := l.admission(ctx)
		if err != nil {
			return err
		}
		var st admissionState
		if v.raw != nil {
			if err := json.Unmarshal(v.raw, &st); err != nil {
				return fmt.Errorf("admission registry: %w", err)
			}
		}
		tree := v.tree.Clone()
		upd, err := fn(&st, tree)
		changes := upd.changes
		signed := len(changes) > 0 || len(upd.revoked) > 0
		if err != nil || !upd.write && !signed {
			return err
		}
		if signed {
			op := l.opts.Operator
			if op == nil {
				return ErrNoOperatorKey
			}
			switch {
			case st.Operator == "":
				st.Operator = op.PublicHex()
			case st.Operator != op.PublicHex():
				return fmt.Errorf("admission registry: the root history is signed by operator key %s, this process holds %s (every replica must use the same --operator-key)", st.Operator, op.PublicHex())
			}
			at := l.opts.Clock.Now()
			if !at.After(st.HeadsAsOf) {
				at = st.HeadsAsOf.Add(time.Nanosecond) // a signed head spoke for up to then
			}
			e, err := op.NextEntry(st.Entries, tree.Root(), at, upd.revoked...)
			if err != nil {
				return err
			}
			for i := range st.Pairs {
				if st.Pairs[i].Since.IsZero() {
					st.Pairs[i].Since = e.Time
				}
			}
			st.Entries = append(st.Entries, e)
			if changes == nil {
				changes = []slotChange{}
			}
			st.Changes = append(st.Changes, changes)
		}
		raw, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		swapped, err := swapper.SwapMeta(ctx, metaAdmission, v.raw, raw)
		if err != nil {
			return err
		}
		if swapped {
			l.adm.mu.Lock()
			l.adm.view = &admissionView{raw: raw, st: &st, tree: tree, past: map[int]*receipts.AdmissionTree{}}
			l.adm.mu.Unlock()
			if signed {
				last := st.Entries[len(st.Entries)-1]
				l.logger.Info("registry root changed", "seq", last.Seq, "root", last.Root, "pairs", len(st.Pairs))
			}
			return nil
		}
		if attempt == maxRegistrySwaps {
			return fmt.Errorf("admission registry: %d concurrent updates in a row; try again", attempt)
		}
	}
}

// maxRegistrySwaps bounds the registry's compare-and-swap retries.
const maxRegistrySwaps = 32

type admitVersion struct {
	v      task.ModelVersion
	digest string // lowercase
	mv     string // commitment hex
}

// AdmitWorker admits a worker for model versions: each pair not yet
// admitted takes a free slot of the admission tree, and one signed entry
// puts the new root in force. Known pairs are skipped (no entry). If an
// admin has revoked any of the versions for this worker, nothing is
// admitted and the error is a *RevokedError naming them. The gateway calls
// it when it accepts a registration.
func (l *Ledger) AdmitWorker(ctx context.Context, workerID string, versions ...task.ModelVersion) error {
	w, err := receipts.ParseCanonicalElement(workerID)
	if err != nil {
		return fmt.Errorf("worker ID: %w", err)
	}
	var want []admitVersion
	for _, v := range versions {
		d, err := receipts.ParseDigest(v.Digest)
		if err != nil {
			return fmt.Errorf("model %s: %w", v.Name, err)
		}
		if v.Name == "" {
			return errors.New("model version without a name")
		}
		want = append(want, admitVersion{v: v, digest: strings.ToLower(v.Digest), mv: receipts.ElementHex(receipts.ModelVersionCommitment(v.Name, d))})
	}
	return l.updateAdmission(ctx, func(st *admissionState, tree *receipts.AdmissionTree) (admissionUpdate, error) {
		var revoked []task.ModelVersion
		for _, a := range want {
			for i := range st.Denied {
				if st.Denied[i].covers(workerID, a.v.Name, a.digest) {
					revoked = append(revoked, a.v)
					break
				}
			}
		}
		if len(revoked) > 0 {
			return admissionUpdate{}, &RevokedError{WorkerID: workerID, Versions: revoked}
		}
		used := make(map[uint64]bool, len(st.Pairs))
		for _, p := range st.Pairs {
			used[p.Slot] = true
		}
		next := uint64(0)
		var changes []slotChange
		for _, a := range want {
			known := slices.ContainsFunc(st.Pairs, func(p AdmittedPair) bool { return p.WorkerID == workerID && p.ModelVersion == a.mv })
			if known {
				continue
			}
			for next < receipts.AdmissionSlots && used[next] {
				next++
			}
			if next == receipts.AdmissionSlots {
				return admissionUpdate{}, fmt.Errorf("admission registry is full (%d pairs)", receipts.AdmissionSlots)
			}
			mv, _ := receipts.ParseElement(a.mv)
			leaf := receipts.AdmissionLeaf(w, mv)
			if err := tree.Set(next, leaf); err != nil {
				return admissionUpdate{}, err
			}
			used[next] = true
			st.Pairs = append(st.Pairs, AdmittedPair{WorkerID: workerID, Model: a.v.Name, Digest: a.digest, ModelVersion: a.mv, Slot: next})
			changes = append(changes, slotChange{Slot: next, Leaf: receipts.ElementHex(leaf)})
		}
		return admissionUpdate{changes: changes}, nil
	})
}

// Revoke removes a worker's admitted pairs for a model (empty: every
// model) and digest (empty: every digest) and records a denial, so the
// worker cannot re-admit itself by registering again. If it removed any
// pair, one signed entry puts the root without them in force. It returns
// the pairs removed.
func (l *Ledger) Revoke(ctx context.Context, workerID, model, digest string) ([]AdmittedPair, error) {
	if err := receipts.CheckElement(workerID); err != nil {
		return nil, fmt.Errorf("worker ID: %w", err)
	}
	if digest != "" {
		if err := receipts.CheckDigest(digest); err != nil {
			return nil, fmt.Errorf("digest: %w", err)
		}
	}
	d := Denial{WorkerID: workerID, Model: model, Digest: digest}
	return l.revoke(ctx, d, nil)
}

// revoke removes the pairs d covers, records d (unless already there) and
// revokes the keys given.
func (l *Ledger) revoke(ctx context.Context, d Denial, keys []receipts.RevokedKey) ([]AdmittedPair, error) {
	var removed []AdmittedPair
	err := l.updateAdmission(ctx, func(st *admissionState, tree *receipts.AdmissionTree) (admissionUpdate, error) {
		removed = nil
		d.At = l.opts.Clock.Now().UTC()
		upd := admissionUpdate{revoked: keys}
		i := slices.IndexFunc(st.Denied, func(x Denial) bool { return x.WorkerID == d.WorkerID && x.Model == d.Model && x.Digest == d.Digest })
		switch {
		case i < 0:
			st.Denied = append(st.Denied, d)
			upd.write = true
		case d.Burned && !st.Denied[i].Burned:
			st.Denied[i].Burned = true
			upd.write = true
		}
		kept := st.Pairs[:0]
		for _, p := range st.Pairs {
			if !d.covers(p.WorkerID, p.Model, p.Digest) {
				kept = append(kept, p)
				continue
			}
			if err := tree.Set(p.Slot, fr.Element{}); err != nil {
				return admissionUpdate{}, err
			}
			removed = append(removed, p)
			upd.changes = append(upd.changes, slotChange{Slot: p.Slot})
		}
		st.Pairs = kept
		return upd, nil
	})
	return removed, err
}

// RevokeKey revokes a worker's key from a time (zero: now), for a key that
// is compromised or a worker that cannot be trusted with its past: every
// pair of it is removed, and the signed history lists the key as revoked
// from then on, so no batch of it dated at or after from verifies under any
// root, including batches a dishonest prover backdates to before the
// revocation. The key is burned: Reinstate does not lift this, and the
// worker needs a new key. It returns the versions removed.
func (l *Ledger) RevokeKey(ctx context.Context, workerID string, from time.Time) ([]task.ModelVersion, error) {
	if err := receipts.CheckElement(workerID); err != nil {
		return nil, fmt.Errorf("worker ID: %w", err)
	}
	now := l.opts.Clock.Now()
	if from.IsZero() {
		from = now
	}
	if from.After(now) {
		return nil, fmt.Errorf("revoke key %s from %s: that is in the future", workerID, from.Format(time.RFC3339Nano))
	}
	removed, err := l.revoke(ctx, Denial{WorkerID: workerID, Burned: true}, []receipts.RevokedKey{{WorkerID: workerID, From: from}})
	out := make([]task.ModelVersion, len(removed))
	for i, p := range removed {
		out[i] = task.ModelVersion{Name: p.Model, Digest: p.Digest}
	}
	return out, err
}

// Reinstate lifts the admin's denials of a worker that the given model
// (empty: any) and digest (empty: any) cover, so its next registration
// admits it again; a burned key (RevokeKey) stays denied. It returns the
// denials still in force for the worker.
func (l *Ledger) Reinstate(ctx context.Context, workerID, model, digest string) ([]Denial, error) {
	if err := receipts.CheckElement(workerID); err != nil {
		return nil, fmt.Errorf("worker ID: %w", err)
	}
	var left []Denial
	err := l.updateAdmission(ctx, func(st *admissionState, _ *receipts.AdmissionTree) (admissionUpdate, error) {
		left = nil
		kept := st.Denied[:0]
		lifted := false
		for _, d := range st.Denied {
			if !d.Burned && d.WorkerID == workerID && (model == "" || d.Model == model) && (digest == "" || d.Digest == digest) {
				lifted = true
				continue
			}
			kept = append(kept, d)
			if d.WorkerID == workerID {
				left = append(left, d)
			}
		}
		st.Denied = kept
		return admissionUpdate{write: lifted}, nil
	})
	return left, err
}

// RevokeWorker is Revoke for the gateway's admin route: the versions
// removed.
func (l *Ledger) RevokeWorker(ctx context.Context, workerID, model, digest string) ([]task.ModelVersion, error) {
	removed, err := l.Revoke(ctx, workerID, model, digest)
	out := make([]task.ModelVersion, len(removed))
	for i, p := range removed {
		out[i] = task.ModelVersion{Name: p.Model, Digest: p.Digest}
	}
	return out, err
}

// ReinstateWorker is Reinstate for the gateway's admin route: the denials
// still in force, as versions (an empty name or digest: all).
func (l *Ledger) ReinstateWorker(ctx context.Context, workerID, model, digest string) ([]task.ModelVersion, error) {
	left, err := l.Reinstate(ctx, workerID, model, digest)
	out := make([]task.ModelVersion, len(left))
	for i, d := range left {
		out[i] = task.ModelVersion{Name: d.Model, Digest: d.Digest}
	}
	return out, err
}

// Admission is a pair's place in the registry root in force at some time.
type Admission struct {
	Root  fr.Element
	Index uint64
	Path  []fr.Element // receipts.RegistryDepthV2 siblings, bottom up
	Entry receipts.RootEntry
}

// AdmissionAt returns the registry root in force at t (the last history
// entry at or before t) and the worker's admission path for the model
// version in it; ErrNotAdmitted (wrapped) if the pair is not in that root,
// or no root was in force yet. The prover proves each batch against the
// root in force at its batch time.
func (l *Ledger) AdmissionAt(ctx context.Context, t time.Time, workerID string, modelVersion fr.Element) (*Admission, error) {
	w, err := receipts.ParseCanonicalElement(workerID)
	if err != nil {
		return nil, fmt.Errorf("%w: worker ID: %w", ErrNotAdmitted, err) // never admitted under that spelling
	}
	v, err := l.admission(ctx)
	if err != nil {
		return nil, err
	}
	es := v.st.Entries
	i, _ := slices.BinarySearchFunc(es, t, func(e receipts.RootEntry, t time.Time) int {
		if e.Time.After(t) {
			return 1
		}
		return -1
	})
	i-- // the last entry at or before t
	if i < 0 {
		return nil, fmt.Errorf("%w: no registry root was in force at %s", ErrNotAdmitted, t.UTC().Format(time.RFC3339Nano))
	}
	l.adm.mu.Lock()
	tree, err := v.treeAt(i)
	l.adm.mu.Unlock()
	if err != nil {
		return nil, err
	}
	leaf := receipts.AdmissionLeaf(w, modelVersion)
	slot, ok := tree.Find(leaf)
	if !ok {
		return nil, fmt.Errorf("%w: worker %s, model version %s, registry root %s (entry %d)", ErrNotAdmitted,
			workerID, receipts.ElementHex(modelVersion), es[i].Root, es[i].Seq)
	}
	return &Admission{Root: tree.Root(), Index: slot, Path: tree.Path(slot), Entry: es[i]}, nil
}

// Registry returns the current admission tree (a copy).
func (l *Ledger) Registry(ctx context.Context) (*receipts.AdmissionTree, error) {
	v, err := l.admission(ctx)
	if err != nil {
		return nil, err
	}
	return v.tree.Clone(), nil
}

// Admitted returns the admitted pairs and the admin's denials.
func (l *Ledger) Admitted(ctx context.Context) ([]AdmittedPair, []Denial, error) {
	v, err := l.admission(ctx)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(v.st.Pairs), slices.Clone(v.st.Denied), nil
}

// RootHistory returns the registry root history as published: the signed
// entries, the operator key and, when this ledger holds the operator key,
// a head signed as of now (without it, verifiers can judge receipts only up
// to the last entry's time). It is an apierr 404 before any admission.
//
// A head is a promise about the future of the shared history: no entry
// follows the last one until its as_of. So before signing, the as_of is
// recorded in the state (compare-and-swapped, as every update is), and
// every entry appended afterwards, by any replica, is dated after it. A
// replica whose clock runs ahead, or a revocation racing this call, would
// otherwise date an entry before a head already handed out, and a
// verifier holding that head would judge batches after the revocation
// against the root that still admits the revoked pair.
func (l *Ledger) RootHistory(ctx context.Context) (*receipts.RootHistory, error) {
	op := l.opts.Operator
	var st admissionState
	if op == nil {
		v, err := l.admission(ctx)
		if err != nil {
			return nil, err
		}
		st = *v.st
	} else {
		asOf := l.opts.Clock.Now().UTC().Round(0)
		err := l.updateAdmission(ctx, func(s *admissionState, _ *receipts.AdmissionTree) (admissionUpdate, error) {
			st = *s
			switch {
			case len(s.Entries) > 0 && op.PublicHex() != s.Operator:
				return admissionUpdate{}, fmt.Errorf("admission registry: history signed by %s, this process holds operator key %s", s.Operator, op.PublicHex())
			case len(s.Entries) == 0 || !asOf.After(s.HeadsAsOf):
				return admissionUpdate{}, nil // no head, or one as late already promised
			}
			s.HeadsAsOf = asOf
			return admissionUpdate{write: true}, nil
		})
		if err != nil {
			return nil, err
		}
		if len(st.Entries) > 0 {
			return op.History(slices.Clone(st.Entries), asOf)
		}
	}
	if len(st.Entries) == 0 {
		return nil, apierr.NotFound("", "registry_empty", "No worker has been admitted yet: the registry has no root.")
	}
	return &receipts.RootHistory{Version: receipts.RootHistoryVersion, OperatorKey: st.Operator, Entries: slices.Clone(st.Entries)}, nil
}

// Legacy v1 model registry.

const metaRegistry = "registry" // the v1 model registry (read only)

// V1RegistryRoots returns the roots the v1 model registry had (oldest
// first), which v1 receipts were proven against. Nothing adds to it now:
// new proofs are v2.
func (l *Ledger) V1RegistryRoots(ctx context.Context) ([]string, error) {
	b, err := l.store.Meta(ctx, metaRegistry)
	if err != nil || b == nil {
		return nil, err
	}
	var st struct {
		Roots []string `json:"roots"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("v1 registry: %w", err)
	}
	return st.Roots, nil
}
