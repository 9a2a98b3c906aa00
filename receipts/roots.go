package receipts

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// The registry root history.
//
// The v2 registry root commits to the admitted (worker ID, model version)
// pairs (AdmissionLeaf). The operator publishes every root the registry has
// had as an append-only history signed with its ed25519 key: entry n says
// "from time T on, the registry root is R", and names the hash of entry
// n-1, so the history is one chain a verifier checks from the first entry.
// Revoking a pair is a later entry whose root lacks it. A receipt is judged
// against the root in force at its batch's time (RootAt).
//
// A history alone says nothing about time after its last entry: a gateway
// that withheld the entry revoking a worker would make that worker's later
// receipts look valid. So the operator also signs a head: "as of time A,
// entry n (hash h) is the last one". RootAt refuses times after the head's
// as_of (or, without a head, after the last entry's own time): fetch a
// newer history to verify newer receipts.
//
// Revoking a pair only changes the root from the revocation on: a worker
// that still holds its key could prove made-up batches dated before it
// against the old root. When a key is compromised the operator revokes
// the key itself from a time (RevokedKey, listed in an entry and signed
// with it): every batch of that worker ID with a batch time at or after
// From is refused, whatever root it was proven under. Such a key is burned
// for good; the worker needs a new key.
//
// Signed bytes (all integers big-endian; Unix times in nanoseconds):
//
//	entry: "tollgate/registry-root/v1\x00" ‖ seq u64 ‖ root (32) ‖ time u64 ‖ prev (32) ‖ revoked (32)
//	head:  "tollgate/registry-head/v1\x00" ‖ seq u64 ‖ hash (32) ‖ as_of u64
//
// where revoked is SHA-256 of the entry's revoked keys, each worker ID (32)
// ‖ from u64, in order (SHA-256 of nothing when there are none).
//
// An entry's hash (the next entry's prev) is SHA-256 of its signed bytes;
// the first entry's prev is 32 zero bytes. Sequence numbers start at 1 and
// increase by one; times increase strictly.

// Domain separators of the two signed statements.
const (
	rootEntryDomain = "tollgate/registry-root/v1\x00"
	rootHeadDomain  = "tollgate/registry-head/v1\x00"
)

// RootHistoryVersion is the root history document format version.
const RootHistoryVersion = 1

// RootEntry is one signed registry root.
type RootEntry struct {
	Seq  uint64    `json:"seq"`
	Root string    `json:"root"` // 0x field element
	Time time.Time `json:"time"` // in force from (UTC)
	Prev string    `json:"prev"` // 0x SHA-256 of the previous entry's signed bytes
	// Revoked are worker keys revoked from a time at or before this
	// entry's (see RevokedKey).
	Revoked   []RevokedKey `json:"revoked,omitempty"`
	Signature string       `json:"signature"`
}

// RevokedKey revokes a worker's key from From on: no batch of WorkerID
// with a batch time at or after From verifies, under any root.
type RevokedKey struct {
	WorkerID string    `json:"worker_id"` // 0x field element
	From     time.Time `json:"from"`      // UTC, not after the entry's time
}

// RootHead is the operator's signed statement that Seq (with Hash) is the
// last entry of its history as of AsOf.
type RootHead struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	AsOf      time.Time `json:"as_of"`
	Signature string    `json:"signature"`
}

// RootHistory is the published document (GET /v1/zk/registry, `tollgate
// registry export`, `tollgate verify --roots`).
type RootHistory struct {
	Version     int         `json:"version"`
	OperatorKey string      `json:"operator_key"` // ed25519 public key, 64 lowercase hex digits
	Entries     []RootEntry `json:"entries"`
	Head        *RootHead   `json:"head,omitempty"`
}

// Root history failures.
var (
	ErrHistory      = errors.New("registry root history does not verify")
	ErrNoRootAt     = errors.New("no registry root in force at that time")
	ErrStaleHistory = errors.New("registry root history is older than the batch")
	ErrKeyRevoked   = errors.New("worker key revoked by the operator")
)

var zeroHash = "0x" + hex.EncodeToString(make([]byte, 32))

// ZeroRootHash is the prev of a history's first entry.
func ZeroRootHash() string { return zeroHash }

func (e *RootEntry) signedBytes() ([]byte, error) {
	root, err := ParseCanonicalElement(e.Root)
	if err != nil {
		return nil, fmt.Errorf("entry %d root: %w", e.Seq, err)
	}
	prev, err := parseHash(e.Prev)
	if err != nil {
		return nil, fmt.Errorf("entry %d prev: %w", e.Seq, err)
	}
	ns, err := unixNano(e.Time)
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", e.Seq, err)
	}
	rev := sha256.New()
	for i, k := range e.Revoked {
		w, err := ParseCanonicalElement(k.WorkerID)
		if err != nil {
			return nil, fmt.Errorf("entry %d revoked key %d: %w", e.Seq, i, err)
		}
		from, err := unixNano(k.From)
		if err != nil {
			return nil, fmt.Errorf("entry %d revoked key %d: %w", e.Seq, i, err)
		}
		wb := w.Bytes()
		rev.Write(wb[:])
		rev.Write(binary.BigEndian.AppendUint64(nil, from))
	}
	b := make([]byte, 0, len(rootEntryDomain)+8+32+8+32+32)
	b = append(b, rootEntryDomain...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	rb := root.Bytes()
	b = append(b, rb[:]...)
	b = binary.BigEndian.AppendUint64(b, ns)
	b = append(b, prev...)
	return rev.Sum(b), nil
}

// Hash is the entry's hash: SHA-256 of its signed bytes, 0x-hex.
func (e *RootEntry) Hash() (string, error) {
	b, err := e.signedBytes()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "0x" + hex.EncodeToString(sum[:]), nil
}

func (h *RootHead) signedBytes() ([]byte, error) {
	hash, err := parseHash(h.Hash)
	if err != nil {
		return nil, fmt.Errorf("head hash: %w", err)
	}
	ns, err := unixNano(h.AsOf)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	b := make([]byte, 0, len(rootHeadDomain)+8+32+8)
	b = append(b, rootHeadDomain...)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = append(b, hash...)
	return binary.BigEndian.AppendUint64(b, ns), nil
}

func unixNano(t time.Time) (uint64, error) {
	if t.Before(time.Unix(0, 0)) || t.After(time.Unix(0, 1<<63-1)) {
		return 0, fmt.Errorf("time %s outside 1970–2262", t.Format(time.RFC3339Nano))
	}
	return uint64(t.UnixNano()), nil
}

func parseHash(s string) ([]byte, error) {
	if len(s) != 66 || s[:2] != "0x" || !lowerHex(s[2:]) {
		return nil, fmt.Errorf("%w: hash %q: want 0x and 64 lowercase hex digits", ErrEncoding, short(s))
	}
	return hex.DecodeString(s[2:])
}

// OperatorKey is the operator's ed25519 key that signs the root history.
type OperatorKey struct {
	priv ed25519.PrivateKey
}

// GenerateOperatorKey makes a key from r (crypto/rand when nil).
func GenerateOperatorKey(r io.Reader) (*OperatorKey, error) {
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generate operator key: %w", err)
	}
	return &OperatorKey{priv: priv}, nil
}

// Public is the key's public half.
func (k *OperatorKey) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// PublicHex is the public key as 64 lowercase hex digits.
func (k *OperatorKey) PublicHex() string { return hex.EncodeToString(k.Public()) }

// ParseOperatorPublicKey reads a public key written by PublicHex.
func ParseOperatorPublicKey(s string) (ed25519.PublicKey, error) {
	if len(s) != 2*ed25519.PublicKeySize || !lowerHex(s) {
		return nil, fmt.Errorf("operator key %q: want %d lowercase hex digits", short(s), 2*ed25519.PublicKeySize)
	}
	b, _ := hex.DecodeString(s)
	return ed25519.PublicKey(b), nil
}

// SignEntry fills e's signature (Seq, Root, Time and Prev must be set).
func (k *OperatorKey) SignEntry(e *RootEntry) error {
	b, err := e.signedBytes()
	if err != nil {
		return err
	}
	e.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, b))
	return nil
}

// NextEntry returns the signed entry that follows history (nil: the first
// entry), putting root in force at t, or at one nanosecond after the last
// entry if t is not after it (times increase strictly), and revoking the
// given keys (their From must not be after the entry's time).
func (k *OperatorKey) NextEntry(history []RootEntry, root fr.Element, t time.Time, revoked ...RevokedKey) (RootEntry, error) {
	e := RootEntry{Seq: 1, Root: ElementHex(root), Time: t.UTC().Round(0), Prev: zeroHash}
	for _, r := range revoked {
		e.Revoked = append(e.Revoked, RevokedKey{WorkerID: r.WorkerID, From: r.From.UTC().Round(0)})
	}
	if n := len(history); n > 0 {
		last := &history[n-1]
		h, err := last.Hash()
		if err != nil {
			return e, err
		}
		e.Seq, e.Prev = last.Seq+1, h
		if !e.Time.After(last.Time) {
			e.Time = last.Time.Add(time.Nanosecond)
		}
	}
	for _, r := range e.Revoked {
		if r.From.After(e.Time) {
			return e, fmt.Errorf("key %s revoked from %s, after the entry's time %s", r.WorkerID, r.From.Format(time.RFC3339Nano), e.Time.Format(time.RFC3339Nano))
		}
	}
	return e, k.SignEntry(&e)
}

// SignHead signs the statement that the last of entries is the history's
// last entry as of asOf (raised to the last entry's time if earlier).
func (k *OperatorKey) SignHead(entries []RootEntry, asOf time.Time) (*RootHead, error) {
	if len(entries) == 0 {
		return nil, errors.New("sign head: empty history")
	}
	last := &entries[len(entries)-1]
	h, err := last.Hash()
	if err != nil {
		return nil, err
	}
	head := &RootHead{Seq: last.Seq, Hash: h, AsOf: asOf.UTC().Round(0)}
	if head.AsOf.Before(last.Time) {
		head.AsOf = last.Time
	}
	b, err := head.signedBytes()
	if err != nil {
		return nil, err
	}
	head.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, b))
	return head, nil
}

// History returns the published document for entries with a head signed
// as of asOf.
func (k *OperatorKey) History(entries []RootEntry, asOf time.Time) (*RootHistory, error) {
	h := &RootHistory{Version: RootHistoryVersion, OperatorKey: k.PublicHex(), Entries: entries}
	if h.Entries == nil {
		h.Entries = []RootEntry{}
	}
	if len(entries) > 0 {
		head, err := k.SignHead(entries, asOf)
		if err != nil {
			return nil, err
		}
		h.Head = head
	}
	return h, nil
}

func verifySig(pub ed25519.PublicKey, msg []byte, sig64 string) error {
	if err := CheckBase64(sig64); err != nil {
		return err
	}
	sig, _ := base64.StdEncoding.DecodeString(sig64)
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, sig) {
		return errors.New("bad signature")
	}
	return nil
}

// Roots is a verified root history: what RootAt answers from.
type Roots struct {
	entries []RootEntry
	roots   []fr.Element
	asOf    time.Time            // the history speaks up to here
	revoked map[string]time.Time // worker ID → earliest From of a RevokedKey
}

// VerifyHistory checks a history against the operator's public key: seq
// from 1 in steps of one, each prev the hash of the entry before (zero
// first), strictly increasing UTC times, canonical roots, every signature.
// The result answers RootAt up to the last entry's time.
func VerifyHistory(pub ed25519.PublicKey, entries []RootEntry) (*Roots, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: operator key of %d bytes", ErrHistory, len(pub))
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: no entries", ErrHistory)
	}
	r := &Roots{entries: append([]RootEntry(nil), entries...), roots: make([]fr.Element, len(entries)), revoked: map[string]time.Time{}}
	prev := zeroHash
	for i := range r.entries {
		e := &r.entries[i]
		switch {
		case e.Seq != uint64(i)+1:
			return nil, fmt.Errorf("%w: entry %d has seq %d", ErrHistory, i+1, e.Seq)
		case e.Prev != prev:
			return nil, fmt.Errorf("%w: entry %d: prev %s, hash of entry %d is %s", ErrHistory, e.Seq, e.Prev, i, prev)
		case CheckUTC(e.Time) != nil:
			return nil, fmt.Errorf("%w: entry %d time is not UTC", ErrHistory, e.Seq)
		case i > 0 && !e.Time.After(r.entries[i-1].Time):
			return nil, fmt.Errorf("%w: entry %d time %s is not after entry %d's", ErrHistory, e.Seq, e.Time.Format(time.RFC3339Nano), i)
		}
		msg, err := e.signedBytes()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		if err := verifySig(pub, msg, e.Signature); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrHistory, e.Seq, err)
		}
		for _, k := range e.Revoked {
			if CheckUTC(k.From) != nil || k.From.After(e.Time) {
				return nil, fmt.Errorf("%w: entry %d revokes %s from %s, after the entry or not UTC", ErrHistory, e.Seq, k.WorkerID, k.From.Format(time.RFC3339Nano))
			}
			if from, ok := r.revoked[k.WorkerID]; !ok || k.From.Before(from) {
				r.revoked[k.WorkerID] = k.From
			}
		}
		r.roots[i], _ = ParseElement(e.Root)
		sum := sha256.Sum256(msg)
		prev = "0x" + hex.EncodeToString(sum[:])
	}
	r.asOf = r.entries[len(r.entries)-1].Time
	return r, nil
}

// Verify checks the document: its operator key must be pub (nil: the key
// it names, for a history that is itself the pin), its entries must verify,
// and its head, if any, must be signed and name the last entry. The result
// answers RootAt up to the head's as_of.
func (h *RootHistory) Verify(pub ed25519.PublicKey) (*Roots, error) {
	if h.Version != RootHistoryVersion {
		return nil, fmt.Errorf("%w: version %d", ErrHistory, h.Version)
	}
	named, err := ParseOperatorPublicKey(h.OperatorKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHistory, err)
	}
	if pub == nil {
		pub = named
	} else if !bytes.Equal(pub, named) {
		return nil, fmt.Errorf("%w: signed by operator key %s, pinned key is %s", ErrHistory, h.OperatorKey, hex.EncodeToString(pub))
	}
	r, err := VerifyHistory(pub, h.Entries)
	if err != nil {
		return nil, err
	}
	if hd := h.Head; hd != nil {
		last := &r.entries[len(r.entries)-1]
		lh, _ := last.Hash()
		switch {
		case hd.Seq != last.Seq || hd.Hash != lh:
			return nil, fmt.Errorf("%w: head names entry %d (%s), the last entry is %d (%s)", ErrHistory, hd.Seq, hd.Hash, last.Seq, lh)
		case CheckUTC(hd.AsOf) != nil || hd.AsOf.Before(last.Time):
			return nil, fmt.Errorf("%w: head as_of %s is before the last entry or not UTC", ErrHistory, hd.AsOf.Format(time.RFC3339Nano))
		}
		msg, err := hd.signedBytes()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrHistory, err)
		}
		if err := verifySig(pub, msg, hd.Signature); err != nil {
			return nil, fmt.Errorf("%w: head: %w", ErrHistory, err)
		}
		r.asOf = hd.AsOf
	}
	return r, nil
}

// RootAt returns the root in force at t: that of the last entry whose time
// is at or before t (an entry is in force from its time until the next
// entry's). It fails before the first entry and after the history's as-of
// time (ErrStaleHistory), about which the history says nothing.
func (r *Roots) RootAt(t time.Time) (fr.Element, *RootEntry, error) {
	if t.After(r.asOf) {
		return fr.Element{}, nil, fmt.Errorf("%w: history as of %s, batch time %s", ErrStaleHistory,
			r.asOf.Format(time.RFC3339Nano), t.UTC().Format(time.RFC3339Nano))
	}
	i := sort.Search(len(r.entries), func(i int) bool { return r.entries[i].Time.After(t) }) - 1
	if i < 0 {
		return fr.Element{}, nil, fmt.Errorf("%w: %s is before the first entry (%s)", ErrNoRootAt,
			t.UTC().Format(time.RFC3339Nano), r.entries[0].Time.Format(time.RFC3339Nano))
	}
	e := r.entries[i]
	return r.roots[i], &e, nil
}

// KeyRevoked reports whether the history revokes workerID's key for a
// batch at t (a RevokedKey with From at or before t), and from when.
func (r *Roots) KeyRevoked(workerID string, t time.Time) (time.Time, bool) {
	from, ok := r.revoked[workerID]
	return from, ok && !t.Before(from)
}

// AsOf is the time up to which the history speaks.
func (r *Roots) AsOf() time.Time { return r.asOf }

// Len is the number of entries.
func (r *Roots) Len() int { return len(r.entries) }

// ParseRootHistory parses a root history document strictly (as
// ParseReceipt does receipts) and checks its field encodings; Verify then
// checks its signatures.
func ParseRootHistory(b []byte) (*RootHistory, error) {
	if len(b) > MaxRootHistoryBytes {
		return nil, fmt.Errorf("%w: root history of %d bytes exceeds %d", ErrEncoding, len(b), MaxRootHistoryBytes)
	}
	var h RootHistory
	if err := DecodeStrict(b, &h); err != nil {
		return nil, fmt.Errorf("root history: %w", err)
	}
	if _, err := ParseOperatorPublicKey(h.OperatorKey); err != nil {
		return nil, fmt.Errorf("root history: %w: %w", ErrEncoding, err)
	}
	check := func(what string, errs ...error) error {
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("root history %s: %w", what, err)
		}
		return nil
	}
	for i := range h.Entries {
		e := &h.Entries[i]
		_, perr := parseHash(e.Prev)
		if err := check(fmt.Sprintf("entry %d", i+1), CheckElement(e.Root), perr, CheckUTC(e.Time), CheckBase64(e.Signature)); err != nil {
			return nil, err
		}
		for j, k := range e.Revoked {
			if err := check(fmt.Sprintf("entry %d revoked key %d", i+1, j), CheckElement(k.WorkerID), CheckUTC(k.From)); err != nil {
				return nil, err
			}
		}
	}
	if hd := h.Head; hd != nil {
		_, herr := parseHash(hd.Hash)
		if err := check("head", herr, CheckUTC(hd.AsOf), CheckBase64(hd.Signature)); err != nil {
			return nil, err
		}
	}
	return &h, nil
}

// MaxRootHistoryBytes bounds a root history document (about 250 bytes an
// entry: some 60,000 entries).
const MaxRootHistoryBytes = 16 << 20

// Operator key files: versioned JSON like the worker key file. The secret
// file holds the ed25519 seed; the public file, which verifiers pin, only
// the public key.
const (
	OperatorKeyFileType       = "tollgate-operator-key"
	OperatorPublicKeyFileType = "tollgate-operator-public-key"
	operatorKeyScheme         = "ed25519"
	operatorKeyFileVersion    = 1
)

type operatorKeyFile struct {
	Type       string `json:"type"`
	Version    int    `json:"version"`
	Scheme     string `json:"scheme"`
	PublicKey  string `json:"public_key"`
	PrivateKey string `json:"private_key,omitempty"` // ed25519 seed, hex (secret file only)
}

// WriteOperatorKey writes k's secret key file.
func WriteOperatorKey(w io.Writer, k *OperatorKey) error {
	return writeKeyFile(w, operatorKeyFile{Type: OperatorKeyFileType, Version: operatorKeyFileVersion, Scheme: operatorKeyScheme,
		PublicKey: k.PublicHex(), PrivateKey: hex.EncodeToString(k.priv.Seed())})
}

// WriteOperatorPublicKey writes the public key file verifiers pin.
func WriteOperatorPublicKey(w io.Writer, pub ed25519.PublicKey) error {
	return writeKeyFile(w, operatorKeyFile{Type: OperatorPublicKeyFileType, Version: operatorKeyFileVersion, Scheme: operatorKeyScheme,
		PublicKey: hex.EncodeToString(pub)})
}

func writeKeyFile(w io.Writer, f operatorKeyFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func readKeyFile(b []byte) (*operatorKeyFile, error) {
	if len(b) > 4096 {
		return nil, errors.New("operator key file: too large")
	}
	var f operatorKeyFile
	if err := DecodeStrict(b, &f); err != nil {
		return nil, fmt.Errorf("operator key file: %w", err)
	}
	switch {
	case f.Type != OperatorKeyFileType && f.Type != OperatorPublicKeyFileType:
		return nil, fmt.Errorf("operator key file: type %q, want %q or %q", f.Type, OperatorKeyFileType, OperatorPublicKeyFileType)
	case f.Version != operatorKeyFileVersion:
		return nil, fmt.Errorf("operator key file: version %d is not supported", f.Version)
	case f.Scheme != operatorKeyScheme:
		return nil, fmt.Errorf("operator key file: scheme %q, want %q", f.Scheme, operatorKeyScheme)
	case (f.Type == OperatorKeyFileType) != (f.PrivateKey != ""):
		return nil, fmt.Errorf("operator key file: a %q file holds a private key exactly when its type is %q", f.Type, OperatorKeyFileType)
	}
	if _, err := ParseOperatorPublicKey(f.PublicKey); err != nil {
		return nil, fmt.Errorf("operator key file: %w", err)
	}
	return &f, nil
}

// ReadOperatorKey parses a secret operator key file.
func ReadOperatorKey(b []byte) (*OperatorKey, error) {
	f, err := readKeyFile(b)
	if err != nil {
		return nil, err
	}
	if f.Type != OperatorKeyFileType {
		return nil, fmt.Errorf("operator key file: holds only a public key")
	}
	seed, err := hex.DecodeString(f.PrivateKey)
	if err != nil || len(seed) != ed25519.SeedSize || !lowerHex(f.PrivateKey) {
		return nil, errors.New("operator key file: private key is not a 32-byte lowercase hex seed")
	}
	k := &OperatorKey{priv: ed25519.NewKeyFromSeed(seed)}
	if k.PublicHex() != f.PublicKey {
		return nil, errors.New("operator key file: public key does not match the private key")
	}
	return k, nil
}

// ReadOperatorPublicKey parses an operator key file, public or secret
// (whose public half it returns).
func ReadOperatorPublicKey(b []byte) (ed25519.PublicKey, error) {
	f, err := readKeyFile(b)
	if err != nil {
		return nil, err
	}
	if f.Type == OperatorKeyFileType {
		k, err := ReadOperatorKey(b)
		if err != nil {
			return nil, err
		}
		return k.Public(), nil
	}
	return ParseOperatorPublicKey(f.PublicKey)
}
