package receipts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
)

// Domain tags. Every hash input sequence starts with (or, for leaves,
// carries in its high bits) one of these, so a request commitment can never
// be read as a model version commitment, a batch message, and so on.
const (
	TagRequest      uint64 = 0x5447_5251 // "TGRQ"
	TagModelVersion uint64 = 0x5447_4d56 // "TGMV"
	TagLeaf         uint64 = 0x5447_4c46 // "TGLF"
	TagBatch        uint64 = 0x5447_4254 // "TGBT"
)

// TokenBits bounds every per-receipt token count: the circuit range-checks
// prompt and completion tokens to this many bits.
const TokenBits = 32

// MaxTokens is the largest token count a leaf can carry.
const MaxTokens = 1<<TokenBits - 1

// RegistryDepth is the fixed depth of the model registry Merkle tree
// (up to 1024 registered model versions).
const RegistryDepth = 10

var perm = poseidon2.NewDefaultPermutation() // width 2, 6 full + 50 partial rounds; stateless

// Compress is the Poseidon2 2-to-1 compression of gnark-crypto and of
// gnark's std/permutation/poseidon2: P(l, r)[1] + r.
func Compress(l, r fr.Element) fr.Element {
	x := [2]fr.Element{l, r}
	if err := perm.Permutation(x[:]); err != nil {
		panic(err) // width is fixed at 2; cannot fail
	}
	var out fr.Element
	out.Add(&x[1], &r)
	return out
}

// HashElements is the Poseidon2 Merkle–Damgård hash with a zero IV over a
// fixed sequence of field elements: state = Compress(state, e) for each e.
// It equals gnark-crypto's poseidon2.NewMerkleDamgardHasher fed the
// elements' 32-byte big-endian encodings, and gnark's std/hash/poseidon2.
func HashElements(elems ...fr.Element) fr.Element {
	var state fr.Element
	for _, e := range elems {
		state = Compress(state, e)
	}
	return state
}

// Limbs splits a 32-byte digest into two 128-bit field elements (high,
// low), so no digest is silently reduced modulo r.
func Limbs(d [32]byte) (hi, lo fr.Element) {
	hi.SetBigInt(new(big.Int).SetBytes(d[:16]))
	lo.SetBigInt(new(big.Int).SetBytes(d[16:]))
	return hi, lo
}

func u64(v uint64) fr.Element {
	var e fr.Element
	e.SetUint64(v)
	return e
}

// ParseDigest parses a lowercase or uppercase hex SHA-256 digest.
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	if len(s) != 64 {
		return d, fmt.Errorf("digest %q: want 64 hex characters, got %d", s, len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// ErrNonCanonical is returned for a field element at or above the modulus.
var ErrNonCanonical = errors.New("field element is not canonical (>= r)")

// ParseElement parses a 0x-prefixed (or bare) big-endian hex field element
// of at most 32 bytes and rejects values that are not canonical (>= r).
func ParseElement(s string) (fr.Element, error) {
	var e fr.Element
	h := strings.TrimPrefix(s, "0x")
	if len(h) == 0 || len(h) > 64 {
		return e, fmt.Errorf("field element %q: want 1 to 64 hex characters", s)
	}
	if len(h)%2 == 1 {
		h = "0" + h
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return e, fmt.Errorf("field element %q: %w", s, err)
	}
	var buf [32]byte
	copy(buf[32-len(b):], b)
	if err := e.SetBytesCanonical(buf[:]); err != nil {
		return e, fmt.Errorf("field element %q: %w", s, ErrNonCanonical)
	}
	return e, nil
}

// ElementHex renders a field element as 0x-prefixed 64-digit lowercase hex.
func ElementHex(e fr.Element) string {
	b := e.Bytes()
	return "0x" + hexString(b[:])
}

// RequestFields are the inputs of a request commitment.
type RequestFields struct {
	RequestID      string
	RequestDigest  [32]byte // SHA-256 of the canonical request (task.Task.Digest)
	ResponseDigest [32]byte // SHA-256 of the response (task.ResponseDigest)
	Subject        string   // API key ID
	Time           time.Time
}

// RequestCommitment is H(TagRequest, SHA-256(request ID) limbs, request
// digest limbs, response digest limbs, SHA-256(subject) limbs, time) with
// time in Unix nanoseconds. It is computed outside the circuit; the leaf
// carries it as one field element. Times outside 1970–2262 are rejected
// (UnixNanos).
func RequestCommitment(f RequestFields) (fr.Element, error) {
	ns, err := UnixNanos(f.Time)
	if err != nil {
		return fr.Element{}, fmt.Errorf("request time %s: %w", f.Time, err)
	}
	idHi, idLo := Limbs(sha256.Sum256([]byte(f.RequestID)))
	rqHi, rqLo := Limbs(f.RequestDigest)
	rsHi, rsLo := Limbs(f.ResponseDigest)
	sbHi, sbLo := Limbs(sha256.Sum256([]byte(f.Subject)))
	return HashElements(u64(TagRequest), idHi, idLo, rqHi, rqLo, rsHi, rsLo, sbHi, sbLo, u64(ns)), nil
}

// ModelVersionCommitment is H(TagModelVersion, SHA-256(name) limbs, weights
// manifest digest limbs).
func ModelVersionCommitment(name string, weights [32]byte) fr.Element {
	nHi, nLo := Limbs(sha256.Sum256([]byte(name)))
	wHi, wLo := Limbs(weights)
	return HashElements(u64(TagModelVersion), nHi, nLo, wHi, wLo)
}

// PackTokens is the leaf's second input: TagLeaf·2^64 + prompt·2^32 +
// completion. Both counts must fit in TokenBits; the circuit range-checks
// them, so the packing is injective.
func PackTokens(prompt, completion uint64) (fr.Element, error) {
	if prompt > MaxTokens || completion > MaxTokens {
		return fr.Element{}, fmt.Errorf("token counts %d/%d exceed %d bits", prompt, completion, TokenBits)
	}
	v := new(big.Int).Lsh(new(big.Int).SetUint64(TagLeaf), 64)
	v.Or(v, new(big.Int).SetUint64(prompt<<32|completion))
	var e fr.Element
	e.SetBigInt(v)
	return e, nil
}

// Leaf is Compress(request commitment, TagLeaf·2^64 + prompt·2^32 +
// completion): one Poseidon2 permutation per receipt.
//
// The leaf does not include the model version: the batch circuit binds the
// whole root to one model version (a public input, covered by the worker's
// signature and checked against the registry root), which ties every leaf
// under it to that version at one hash per batch instead of one per leaf.
// Leaves and inner nodes are separated by the leaf tag in the high bits of
// the second input: an inner node's right child would have to be a
// Poseidon2 output below 2^96 with the tag in bits 64..95 to pass as a leaf,
// and the tree depth is fixed by the circuit capacity in any case.
func Leaf(requestCommitment fr.Element, prompt, completion uint64) (fr.Element, error) {
	packed, err := PackTokens(prompt, completion)
	if err != nil {
		return fr.Element{}, err
	}
	return Compress(requestCommitment, packed), nil
}

// PackTotals is the batch message's totals element: count·2^128 +
// totalPrompt·2^64 + totalCompletion.
func PackTotals(count, totalPrompt, totalCompletion uint64) fr.Element {
	v := new(big.Int).Lsh(new(big.Int).SetUint64(count), 128)
	v.Or(v, new(big.Int).Lsh(new(big.Int).SetUint64(totalPrompt), 64))
	v.Or(v, new(big.Int).SetUint64(totalCompletion))
	var e fr.Element
	e.SetBigInt(v)
	return e
}

// BatchMessage is what the worker signs for a batch: H(TagBatch, root,
// model version, PackTotals(count, prompt, completion), sequence).
func BatchMessage(root, modelVersion fr.Element, count, totalPrompt, totalCompletion, sequence uint64) fr.Element {
	return HashElements(u64(TagBatch), root, modelVersion, PackTotals(count, totalPrompt, totalCompletion), u64(sequence))
}

// MerkleRoot is the root of a complete binary tree over leaves (whose
// length must be a power of two): node = Compress(left, right).
func MerkleRoot(leaves []fr.Element) fr.Element {
	level := append([]fr.Element(nil), leaves...)
	for len(level) > 1 {
		next := make([]fr.Element, len(level)/2)
		for i := range next {
			next[i] = Compress(level[2*i], level[2*i+1])
		}
		level = next
	}
	if len(level) == 0 {
		return fr.Element{}
	}
	return level[0]
}

// MerklePath returns the siblings of leaf index from the bottom up.
func MerklePath(leaves []fr.Element, index int) []fr.Element {
	return NewMerkleTree(leaves).Path(index)
}

// MerkleTree holds every level of a complete binary tree (leaves first), so
// many paths can be read without rehashing.
type MerkleTree [][]fr.Element

// NewMerkleTree hashes a power-of-two number of leaves into a tree.
func NewMerkleTree(leaves []fr.Element) MerkleTree {
	t := MerkleTree{append([]fr.Element(nil), leaves...)}
	for level := t[0]; len(level) > 1; {
		next := make([]fr.Element, len(level)/2)
		for i := range next {
			next[i] = Compress(level[2*i], level[2*i+1])
		}
		t = append(t, next)
		level = next
	}
	return t
}

// Path returns the siblings of leaf index from the bottom up.
func (t MerkleTree) Path(index int) []fr.Element {
	var path []fr.Element
	for _, level := range t[:len(t)-1] {
		path = append(path, level[index^1])
		index /= 2
	}
	return path
}

// RootFromPath recomputes a root from a leaf, its index and its siblings.
func RootFromPath(leaf fr.Element, index uint64, path []fr.Element) fr.Element {
	cur := leaf
	for _, s := range path {
		if index&1 == 0 {
			cur = Compress(cur, s)
		} else {
			cur = Compress(s, cur)
		}
		index >>= 1
	}
	return cur
}

// Registry is the set of registered model versions as a fixed-depth
// (RegistryDepth) Merkle tree whose leaves are model version commitments in
// registration order, padded with zeros.
type Registry struct {
	leaves []fr.Element
}

// NewRegistry builds a registry from model version commitments.
func NewRegistry(versions []fr.Element) (*Registry, error) {
	if len(versions) > 1<<RegistryDepth {
		return nil, fmt.Errorf("registry holds at most %d model versions, got %d", 1<<RegistryDepth, len(versions))
	}
	leaves := make([]fr.Element, 1<<RegistryDepth)
	copy(leaves, versions)
	return &Registry{leaves: leaves}, nil
}

// Root is the registry root.
func (r *Registry) Root() fr.Element { return MerkleRoot(r.leaves) }

// Path returns the index and siblings of a model version, or false.
func (r *Registry) Path(version fr.Element) (uint64, []fr.Element, bool) {
	if version.IsZero() {
		return 0, nil, false
	}
	for i, l := range r.leaves {
		if l.Equal(&version) {
			return uint64(i), MerklePath(r.leaves, i), true
		}
	}
	return 0, nil, false
}

// AdmissionRegistry is the v2 admission registry over a list of admission
// leaves (AdmissionLeaf(worker ID, model version)) in admission order: leaf
// i in slot i of an AdmissionTree, the ledger's sparse depth-RegistryDepthV2
// tree, so both compute the same roots and paths. Tests and fixtures that
// hold a plain list use it; the ledger keeps its AdmissionTree itself.
type AdmissionRegistry struct {
	leaves []fr.Element
	tree   *AdmissionTree
}

// NewAdmissionRegistry builds the tree over admission leaves (see
// AdmissionLeaf). Zero leaves are refused: they are the padding.
func NewAdmissionRegistry(leaves []fr.Element) (*AdmissionRegistry, error) {
	if len(leaves) > 1<<RegistryDepthV2 {
		return nil, fmt.Errorf("admission registry holds at most %d pairs, got %d", 1<<RegistryDepthV2, len(leaves))
	}
	slots := make(map[uint64]fr.Element, len(leaves))
	for i := range leaves {
		if leaves[i].IsZero() {
			return nil, fmt.Errorf("admission leaf %d is zero (the padding value)", i)
		}
		slots[uint64(i)] = leaves[i]
	}
	t, err := BuildAdmissionTree(slots)
	if err != nil {
		return nil, err
	}
	return &AdmissionRegistry{leaves: append([]fr.Element(nil), leaves...), tree: t}, nil
}

// Root is the registry root.
func (r *AdmissionRegistry) Root() fr.Element { return r.tree.Root() }

// Path returns the index and the RegistryDepthV2 siblings (bottom up) of an
// admission leaf (its first slot), or false if it is not admitted.
func (r *AdmissionRegistry) Path(leaf fr.Element) (uint64, []fr.Element, bool) {
	if leaf.IsZero() {
		return 0, nil, false
	}
	for i, l := range r.leaves {
		if l.Equal(&leaf) {
			return uint64(i), r.tree.Path(uint64(i)), true
		}
	}
	return 0, nil, false
}
