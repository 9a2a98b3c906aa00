package receipts

import (
	"crypto/sha256"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
)

func el(v uint64) fr.Element { return u64(v) }

var katRequest = RequestFields{RequestID: "req-1", RequestDigest: sha256.Sum256([]byte("request")),
	ResponseDigest: sha256.Sum256([]byte("response")), Subject: "key_1", Time: time.Unix(1700000000, 123456789)}

// Known answers pin every hash: a change here breaks every receipt ever issued.
func TestKnownAnswers(t *testing.T) {
	rc, err := RequestCommitment(katRequest)
	if err != nil {
		t.Fatal(err)
	}
	mv := ModelVersionCommitment("llama3-8b", sha256.Sum256([]byte("weights")))
	leaf, err := Leaf(rc, 12, 34)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry([]fr.Element{mv})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  fr.Element
		want string
	}{
		{"compress(1,2)", Compress(el(1), el(2)), "0x02e7529d93e1a7ae526147c2ee72588aee90e6a7c3e361de6daa6be045c6f530"},
		{"hash(1,2,1)", HashElements(el(1), el(2), el(1)), "0x1526a1d56a46f09db764e632945749d41fe3f7316f9716fad6f1db6debaa0e56"},
		{"request commitment", rc, "0x0be2989093e987dab0f95afd0ea846ede6cf6e5630551719662a53a6985e1792"},
		{"model version", mv, "0x2a3e824720298d569a595cbd88519f382f07893614cf161cb551fe4b2707e192"},
		{"leaf", leaf, "0x1533707b6fc8252c0f0ff2fa7b33dd74d313f869cca2f1dc113e17afae90723e"},
		{"batch message", BatchMessage(leaf, rc, 1, 12, 34, 5), "0x22614fc7ca165a14240ade91c2c511c48ca175f6306daa57a764df966032466c"},
		{"registry root", reg.Root(), "0x0ff1373bd1372f3565975a2e7921be1a0cef578bd0a979e2a014d8b81feb5418"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ElementHex(tt.got); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// HashElements must equal gnark-crypto's own Merkle–Damgård Poseidon2 hasher.
func TestHashElementsMatchesGnarkCrypto(t *testing.T) {
	var a, b, c fr.Element
	a.SetRandom()
	b.SetRandom()
	c.SetUint64(TagLeaf)
	h := poseidon2.NewMerkleDamgardHasher()
	for _, e := range []fr.Element{a, b, c} {
		bs := e.Bytes()
		h.Write(bs[:])
	}
	var want fr.Element
	want.SetBytes(h.Sum(nil))
	if got := HashElements(a, b, c); !got.Equal(&want) {
		t.Errorf("HashElements %s, gnark-crypto %s", ElementHex(got), ElementHex(want))
	}
}

func TestLeafFieldsSeparate(t *testing.T) {
	rc, _ := RequestCommitment(katRequest)
	base, _ := Leaf(rc, 12, 34)
	// Moving a token between prompt and completion, or any field, changes the leaf.
	swapped, _ := Leaf(rc, 34, 12)
	moved, _ := Leaf(rc, 13, 33)
	if swapped.Equal(&base) || moved.Equal(&base) {
		t.Error("token split does not change the leaf")
	}
	if _, err := Leaf(rc, 1<<32, 0); err == nil {
		t.Error("prompt tokens above 32 bits accepted")
	}
	other := katRequest
	other.Time = other.Time.Add(time.Nanosecond)
	rc2, _ := RequestCommitment(other)
	if rc2.Equal(&rc) {
		t.Error("time does not change the request commitment")
	}
	if _, err := RequestCommitment(RequestFields{Time: time.Unix(-1, 0)}); err == nil {
		t.Error("time before 1970 accepted")
	}
}

func TestMerklePath(t *testing.T) {
	leaves := make([]fr.Element, 8)
	for i := range leaves {
		leaves[i] = el(uint64(i + 1))
	}
	root := MerkleRoot(leaves)
	for i := range leaves {
		path := MerklePath(leaves, i)
		if got := RootFromPath(leaves[i], uint64(i), path); !got.Equal(&root) {
			t.Errorf("leaf %d: path does not lead to the root", i)
		}
		if got := RootFromPath(leaves[i], uint64(i^1), path); got.Equal(&root) {
			t.Errorf("leaf %d: path verifies at the wrong index", i)
		}
	}
}

var elementCases = []struct {
	name string
	in   string
	ok   bool
}{
	{"zero", "0x00", true},
	{"one bare", "1", true},
	{"r-1", "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000", true},
	{"r", "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001", false},
	{"2^256-1", "0x" + strings.Repeat("f", 64), false},
	{"too long", "0x" + strings.Repeat("0", 65), false},
	{"empty", "0x", false},
	{"not hex", "0xzz", false},
}

func TestParseElement(t *testing.T) {
	for _, tt := range elementCases {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseElement(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseElement(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if tt.name == "r" && !errors.Is(err, ErrNonCanonical) {
				t.Errorf("err = %v, want ErrNonCanonical", err)
			}
			if err == nil {
				back, err := ParseElement(ElementHex(e))
				if err != nil || !back.Equal(&e) {
					t.Errorf("round trip of %q failed", tt.in)
				}
			}
		})
	}
}

func FuzzParseElement(f *testing.F) {
	for _, tt := range elementCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseElement(s)
		if err != nil {
			return
		}
		back, err := ParseElement(ElementHex(e))
		if err != nil || !back.Equal(&e) {
			t.Fatalf("round trip of %q failed", s)
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	f.Add(strings.Repeat("ab", 32))
	f.Add("xyz")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		hi, lo := Limbs(d)
		var bh, bl big.Int
		if hi.BigInt(&bh).BitLen() > 128 || lo.BigInt(&bl).BitLen() > 128 {
			t.Fatalf("limb above 128 bits for %q", s)
		}
	})
}

// The sparse admission tree must equal the full tree over 2^16 padded leaves.
func TestAdmissionRegistryMatchesFullTree(t *testing.T) {
	var leaves []fr.Element
	for i := range 5 {
		leaves = append(leaves, AdmissionLeaf(el(uint64(100+i)), el(uint64(7+i%2))))
	}
	reg, err := NewAdmissionRegistry(leaves)
	if err != nil {
		t.Fatal(err)
	}
	full := make([]fr.Element, 1<<RegistryDepthV2)
	copy(full, leaves)
	want := MerkleRoot(full)
	if got := reg.Root(); !got.Equal(&want) {
		t.Fatalf("root %s, full tree %s", ElementHex(got), ElementHex(want))
	}
	for i, l := range leaves {
		idx, path, ok := reg.Path(l)
		if !ok || idx != uint64(i) {
			t.Fatalf("leaf %d: index %d, ok %v", i, idx, ok)
		}
		if got := RootFromPath(l, idx, path); !got.Equal(&want) {
			t.Fatalf("leaf %d: path leads to %s", i, ElementHex(got))
		}
	}
	if _, _, ok := reg.Path(AdmissionLeaf(el(1), el(2))); ok {
		t.Error("a pair never admitted has a path")
	}
	empty, _ := NewAdmissionRegistry(nil)
	var zeros fr.Element
	for range RegistryDepthV2 {
		zeros = Compress(zeros, zeros)
	}
	if got := empty.Root(); !got.Equal(&zeros) {
		t.Errorf("empty registry root %s, want the all-zero root", ElementHex(got))
	}
	if _, err := NewAdmissionRegistry([]fr.Element{{}}); err == nil {
		t.Error("a zero admission leaf was accepted")
	}
}
