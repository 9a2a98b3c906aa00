package receipts

import (
	"fmt"
	"maps"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// AdmissionTree is the v2 admission registry: a Merkle tree of depth
// RegistryDepthV2 (65,536 slots) over AdmissionLeaf values, empty slots
// zero, node = Compress(left, right) as in MerkleRoot. It is kept sparse:
// only nodes that differ from the root of an empty subtree of their height
// are stored, the empty-subtree roots are computed once, and setting a
// slot rehashes the RegistryDepthV2 nodes above it. So a registry of n
// pairs costs about 16·n hashes to build and 16 per change, never 65,536.
type AdmissionTree struct {
	nodes [RegistryDepthV2 + 1]map[uint64]fr.Element // [0] leaves … [RegistryDepthV2] root
	slots map[fr.Element]uint64                      // leaf → slot, for Find
}

// AdmissionSlots is the number of slots in the admission tree.
const AdmissionSlots = 1 << RegistryDepthV2

// emptyAdmission[h] is the root of an empty subtree of height h.
var emptyAdmission = func() (z [RegistryDepthV2 + 1]fr.Element) {
	for h := 1; h <= RegistryDepthV2; h++ {
		z[h] = Compress(z[h-1], z[h-1])
	}
	return z
}()

// NewAdmissionTree returns an empty tree.
func NewAdmissionTree() *AdmissionTree {
	t := &AdmissionTree{slots: map[fr.Element]uint64{}}
	for i := range t.nodes {
		t.nodes[i] = map[uint64]fr.Element{}
	}
	return t
}

// BuildAdmissionTree builds a tree from slot → leaf (zero leaves are
// empty), hashing each non-empty node once: about 2 hashes a leaf for
// leaves in consecutive slots, against 16 for one Set per leaf.
func BuildAdmissionTree(leaves map[uint64]fr.Element) (*AdmissionTree, error) {
	t := NewAdmissionTree()
	for i, l := range leaves {
		if i >= AdmissionSlots {
			return nil, fmt.Errorf("admission slot %d outside the %d slots", i, AdmissionSlots)
		}
		if !l.IsZero() {
			t.nodes[0][i] = l
			t.slots[l] = i
		}
	}
	for h := 0; h < RegistryDepthV2; h++ {
		for i := range t.nodes[h] {
			p := i >> 1
			if _, done := t.nodes[h+1][p]; done {
				continue
			}
			v := Compress(t.node(h, p<<1), t.node(h, p<<1|1))
			if !v.Equal(&emptyAdmission[h+1]) {
				t.nodes[h+1][p] = v
			}
		}
	}
	return t, nil
}

func (t *AdmissionTree) node(h int, i uint64) fr.Element {
	if v, ok := t.nodes[h][i]; ok {
		return v
	}
	return emptyAdmission[h]
}

// Set puts leaf (zero: empty) in slot index and rehashes the path above it.
func (t *AdmissionTree) Set(index uint64, leaf fr.Element) error {
	if index >= AdmissionSlots {
		return fmt.Errorf("admission slot %d outside the %d slots", index, AdmissionSlots)
	}
	if old, ok := t.nodes[0][index]; ok {
		delete(t.slots, old)
	}
	if !leaf.IsZero() {
		t.slots[leaf] = index
	}
	cur := leaf
	for h := 0; ; h++ {
		if cur.Equal(&emptyAdmission[h]) {
			delete(t.nodes[h], index)
		} else {
			t.nodes[h][index] = cur
		}
		if h == RegistryDepthV2 {
			return nil
		}
		l, r := t.node(h, index&^1), t.node(h, index|1)
		cur = Compress(l, r)
		index >>= 1
	}
}

// Leaf returns slot index's leaf (zero when empty).
func (t *AdmissionTree) Leaf(index uint64) fr.Element { return t.node(0, index) }

// Find returns the slot holding leaf (which must not be zero), or false.
// Pairs are unique in a registry, so there is at most one.
func (t *AdmissionTree) Find(leaf fr.Element) (uint64, bool) {
	if leaf.IsZero() {
		return 0, false
	}
	i, ok := t.slots[leaf]
	return i, ok
}

// Root is the registry root.
func (t *AdmissionTree) Root() fr.Element { return t.node(RegistryDepthV2, 0) }

// Path returns slot index's RegistryDepthV2 siblings from the leaf up, as
// RootFromPath takes them.
func (t *AdmissionTree) Path(index uint64) []fr.Element {
	path := make([]fr.Element, RegistryDepthV2)
	for h := range path {
		path[h] = t.node(h, index^1)
		index >>= 1
	}
	return path
}

// Clone returns an independent copy.
func (t *AdmissionTree) Clone() *AdmissionTree {
	c := &AdmissionTree{slots: maps.Clone(t.slots)}
	for i, m := range t.nodes {
		c.nodes[i] = maps.Clone(m)
	}
	return c
}
