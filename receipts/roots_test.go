package receipts

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/google/go-cmp/cmp"
)

func testOperator(t testing.TB, seed byte) *OperatorKey {
	k, err := GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{seed}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testHistory: three entries, at t0, t0+1m and t0+2m, roots 1, 2, 3; head
// as of t0+10m.
func testHistory(t testing.TB, k *OperatorKey) *RootHistory {
	var entries []RootEntry
	for i := range 3 {
		e, err := k.NextEntry(entries, el(uint64(i+1)), t0.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	h, err := k.History(entries, t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRootAt(t *testing.T) {
	k := testOperator(t, 1)
	roots, err := testHistory(t, k).Verify(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		at   time.Time
		want uint64
		err  error
	}{
		{"before the first entry", t0.Add(-time.Nanosecond), 0, ErrNoRootAt},
		{"at the first entry", t0, 1, nil},
		{"just before the second", t0.Add(time.Minute - time.Nanosecond), 1, nil},
		{"at the second", t0.Add(time.Minute), 2, nil},
		{"after the last", t0.Add(5 * time.Minute), 3, nil},
		{"at the head", t0.Add(10 * time.Minute), 3, nil},
		{"after the head", t0.Add(10*time.Minute + 1), 0, ErrStaleHistory},
		{"another zone, same instant", t0.Add(time.Minute).In(time.FixedZone("x", 3600)), 2, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := roots.RootAt(tt.at)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if want := el(tt.want); err == nil && !got.Equal(&want) {
				t.Errorf("root %s, want %d", ElementHex(got), tt.want)
			}
		})
	}
	// Without a head the history speaks only up to its last entry.
	h := testHistory(t, k)
	bare, err := VerifyHistory(k.Public(), h.Entries)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := bare.RootAt(t0.Add(2*time.Minute + 1)); !errors.Is(err, ErrStaleHistory) {
		t.Errorf("headless history answered after its last entry: %v", err)
	}
}

// TestHistoryTamper: every change to a signed history, short of the
// operator's key, is refused.
func TestHistoryTamper(t *testing.T) {
	k := testOperator(t, 1)
	other := testOperator(t, 2)
	flipSig := func(s string) string {
		b, _ := base64.StdEncoding.DecodeString(s)
		b[0] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	for _, tt := range []struct {
		name string
		pin  ed25519.PublicKey
		edit func(h *RootHistory)
	}{
		{"pinned key differs", other.Public(), func(*RootHistory) {}},
		{"signed by another key", nil, func(h *RootHistory) {
			h.OperatorKey = other.PublicHex() // the document names it, the signatures are k's
		}},
		{"root changed", nil, func(h *RootHistory) { h.Entries[1].Root = ElementHex(el(9)) }},
		{"time moved", nil, func(h *RootHistory) { h.Entries[1].Time = h.Entries[1].Time.Add(time.Second) }},
		{"signature flipped", nil, func(h *RootHistory) { h.Entries[2].Signature = flipSig(h.Entries[2].Signature) }},
		{"entry dropped (revocation withheld)", nil, func(h *RootHistory) {
			h.Entries = append(h.Entries[:1], h.Entries[2:]...)
		}},
		{"last entry dropped under the old head", nil, func(h *RootHistory) { h.Entries = h.Entries[:2] }},
		{"entries swapped", nil, func(h *RootHistory) { h.Entries[1], h.Entries[2] = h.Entries[2], h.Entries[1] }},
		{"seq renumbered", nil, func(h *RootHistory) { h.Entries[0].Seq = 0 }},
		{"prev not the hash", nil, func(h *RootHistory) { h.Entries[1].Prev = ZeroRootHash() }},
		{"first prev not zero", nil, func(h *RootHistory) { h.Entries[0].Prev = h.Entries[1].Prev }},
		{"head as_of moved", nil, func(h *RootHistory) { h.Head.AsOf = h.Head.AsOf.Add(time.Hour) }},
		{"head signature flipped", nil, func(h *RootHistory) { h.Head.Signature = flipSig(h.Head.Signature) }},
		{"head of a shorter history", nil, func(h *RootHistory) {
			head, _ := k.SignHead(h.Entries[:2], t0.Add(time.Hour))
			h.Head = head
		}},
		{"no entries", nil, func(h *RootHistory) { h.Entries, h.Head = nil, nil }},
		{"version", nil, func(h *RootHistory) { h.Version = 2 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := testHistory(t, k)
			tt.edit(h)
			pin := tt.pin
			if pin == nil {
				pin = k.Public()
			}
			if _, err := h.Verify(pin); !errors.Is(err, ErrHistory) {
				t.Fatalf("err = %v, want ErrHistory", err)
			}
		})
	}
	// Times must increase strictly even when signed by the operator.
	var entries []RootEntry
	e1, _ := k.NextEntry(nil, el(1), t0)
	e2 := RootEntry{Seq: 2, Root: ElementHex(el(2)), Time: t0, Prev: mustHash(t, &e1)}
	if err := k.SignEntry(&e2); err != nil {
		t.Fatal(err)
	}
	entries = append(entries, e1, e2)
	if _, err := VerifyHistory(k.Public(), entries); !errors.Is(err, ErrHistory) {
		t.Errorf("two entries at one time: %v", err)
	}
	// NextEntry itself never repeats a time.
	e2, _ = k.NextEntry(entries[:1], el(2), t0.Add(-time.Hour))
	if !e2.Time.After(e1.Time) {
		t.Errorf("NextEntry time %s not after %s", e2.Time, e1.Time)
	}
}

func mustHash(t *testing.T, e *RootEntry) string {
	h, err := e.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRevocationByRoot: a worker admitted, then revoked by a later entry,
// proves membership against the first root only; at a batch time after
// the revocation the root in force lacks it.
func TestRevocationByRoot(t *testing.T) {
	k := testOperator(t, 1)
	good, bad := AdmissionLeaf(el(11), el(7)), AdmissionLeaf(el(12), el(7))
	tree := NewAdmissionTree()
	tree.Set(0, good)
	tree.Set(1, bad)
	e1, _ := k.NextEntry(nil, tree.Root(), t0)
	badPath := tree.Path(1)
	tree.Set(1, fr.Element{}) // revoke
	e2, _ := k.NextEntry([]RootEntry{e1}, tree.Root(), t0.Add(time.Minute))
	h, _ := k.History([]RootEntry{e1, e2}, t0.Add(time.Hour))
	roots, err := h.Verify(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := roots.RootAt(t0.Add(time.Second))
	after, _, _ := roots.RootAt(t0.Add(2 * time.Minute))
	if got := RootFromPath(bad, 1, badPath); !got.Equal(&before) {
		t.Error("revoked pair not in the root before its revocation")
	}
	if got := RootFromPath(bad, 1, badPath); got.Equal(&after) {
		t.Error("revoked pair still proves membership after its revocation")
	}
	if got := RootFromPath(good, 0, tree.Path(0)); !got.Equal(&after) {
		t.Error("the remaining pair lost its membership")
	}
}

func TestAdmissionTreeMatchesMerkleRoot(t *testing.T) {
	tree := NewAdmissionTree()
	empty := tree.Root()
	full := make([]fr.Element, AdmissionSlots)
	if want := MerkleRoot(full); !empty.Equal(&want) {
		t.Fatal("empty tree root differs from MerkleRoot of zero leaves")
	}
	for _, i := range []uint64{0, 1, 2, 777, AdmissionSlots - 1} {
		leaf := AdmissionLeaf(el(i+100), el(5))
		full[i] = leaf
		if err := tree.Set(i, leaf); err != nil {
			t.Fatal(err)
		}
	}
	if want, got := MerkleRoot(full), tree.Root(); !got.Equal(&want) {
		t.Fatal("sparse root differs from MerkleRoot")
	}
	root := tree.Root()
	for _, i := range []uint64{0, 1, 2, 777, AdmissionSlots - 1, 3} {
		if got := RootFromPath(full[i], i, tree.Path(i)); !got.Equal(&root) {
			t.Errorf("path of slot %d does not lead to the root", i)
		}
	}
	built, err := BuildAdmissionTree(map[uint64]fr.Element{0: full[0], 1: full[1], 2: full[2], 777: full[777], AdmissionSlots - 1: full[AdmissionSlots-1], 5: {}})
	if err != nil {
		t.Fatal(err)
	}
	if got := built.Root(); !got.Equal(&root) {
		t.Error("BuildAdmissionTree root differs from Set's")
	}
	if i, ok := built.Find(full[777]); !ok || i != 777 {
		t.Errorf("Find = %d, %v", i, ok)
	}
	c := tree.Clone()
	for _, i := range []uint64{0, 1, 2, 777, AdmissionSlots - 1} {
		tree.Set(i, fr.Element{})
	}
	if got := tree.Root(); !got.Equal(&empty) {
		t.Error("clearing every slot does not give the empty root")
	}
	if got := c.Root(); !got.Equal(&root) {
		t.Error("clone changed with the original")
	}
	if err := tree.Set(AdmissionSlots, el(1)); err == nil {
		t.Error("slot outside the tree accepted")
	}
}

func TestOperatorKeyFiles(t *testing.T) {
	k := testOperator(t, 3)
	var sec, pub bytes.Buffer
	if err := WriteOperatorKey(&sec, k); err != nil {
		t.Fatal(err)
	}
	if err := WriteOperatorPublicKey(&pub, k.Public()); err != nil {
		t.Fatal(err)
	}
	k2, err := ReadOperatorKey(sec.Bytes())
	if err != nil || k2.PublicHex() != k.PublicHex() {
		t.Fatalf("secret round trip: %v", err)
	}
	for _, b := range [][]byte{sec.Bytes(), pub.Bytes()} {
		p, err := ReadOperatorPublicKey(b)
		if err != nil || !p.Equal(k.Public()) {
			t.Fatalf("public from %s: %v", b, err)
		}
	}
	if _, err := ReadOperatorKey(pub.Bytes()); err == nil {
		t.Error("public file read as a secret key")
	}
	other := testOperator(t, 4)
	for name, b := range map[string]string{
		"mismatched public key": strings.Replace(sec.String(), k.PublicHex(), other.PublicHex(), 1),
		"uppercase key":         strings.Replace(pub.String(), k.PublicHex(), strings.ToUpper(k.PublicHex()), 1),
		"case-variant key":      strings.Replace(pub.String(), `"public_key"`, `"Public_Key"`, 1),
		"unknown scheme":        strings.Replace(pub.String(), `"ed25519"`, `"ed448"`, 1),
		"private key in public": strings.Replace(pub.String(), `"tollgate-operator-public-key"`, `"tollgate-operator-key"`, 1),
	} {
		if _, err := ReadOperatorPublicKey([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func historyJSON(t testing.TB) string {
	b, err := json.Marshal(testHistory(t, testOperator(t, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseRootHistory(t *testing.T) {
	base := historyJSON(t)
	h, err := ParseRootHistory([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Verify(nil); err != nil {
		t.Fatal(err)
	}
	rep := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("base lacks %s", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	root1 := ElementHex(el(1))
	for name, in := range map[string]string{
		"uppercase root":     rep(root1, strings.ToUpper(root1)),
		"root without 0x":    rep(`"root":"`+root1, `"root":"`+root1[2:]),
		"duplicate seq":      rep(`"seq":2`, `"seq":2,"seq":1`),
		"case-variant root":  rep(`"root":"`+root1+`"`, `"root":"`+root1+`","ROOT":"0x01"`),
		"time with a zone":   rep(`"time":"2026-03-01T12:00:00Z"`, `"time":"2026-03-01T13:00:00+01:00"`),
		"unknown field":      rep(`"version":1`, `"version":1,"trusted":true`),
		"unpadded signature": rep(`=="}`, `"}`),
	} {
		if _, err := ParseRootHistory([]byte(in)); !errors.Is(err, ErrEncoding) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// FuzzParseRootHistory: an accepted document re-encodes to itself, and
// verifying it never panics and never succeeds under another key.
func FuzzParseRootHistory(f *testing.F) {
	f.Add(historyJSON(f))
	f.Add(`{"version":1,"operator_key":"","entries":[]}`)
	{
		k := testOperator(f, 1)
		h := testHistory(f, k)
		e, _ := k.NextEntry(h.Entries, el(4), t0.Add(3*time.Minute), RevokedKey{WorkerID: ElementHex(el(42)), From: t0})
		signed, _ := k.History(append(h.Entries, e), t0.Add(10*time.Minute))
		b, _ := json.Marshal(signed)
		f.Add(string(b))
	}
	other := testOperator(f, 9).Public()
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseRootHistory([]byte(s))
		if err != nil {
			return
		}
		out, _ := json.Marshal(h)
		again, err := ParseRootHistory(out)
		if err != nil {
			t.Fatalf("re-encoding refused: %v", err)
		}
		if d := cmp.Diff(again, h); d != "" {
			t.Fatalf("(-got +want):\n%s", d)
		}
		if _, err := h.Verify(other); err == nil {
			t.Fatal("history verified under an unrelated key")
		}
		if roots, err := h.Verify(nil); err == nil {
			roots.RootAt(t0)
		}
	})
}

// FuzzReadOperatorKey: the operator key file parser never panics, and a
// file it accepts as a secret key yields the public key it states.
func FuzzReadOperatorKey(f *testing.F) {
	k := testOperator(f, 3)
	var sec, pub bytes.Buffer
	WriteOperatorKey(&sec, k)
	WriteOperatorPublicKey(&pub, k.Public())
	f.Add(sec.String())
	f.Add(pub.String())
	f.Add(`{"type":"tollgate-operator-key","version":1,"scheme":"ed25519","public_key":"","private_key":"00"}`)
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ReadOperatorKey([]byte(s)); err == nil {
			p, err := ReadOperatorPublicKey([]byte(s))
			if err != nil || !p.Equal(k.Public()) {
				t.Fatalf("secret file's public key: %v", err)
			}
		}
		ReadOperatorPublicKey([]byte(s))
	})
}

// TestKeyRevocation: a key revoked from a time refuses batches dated from
// then on under any root, including roots signed before the revocation;
// the revocation list is covered by the entry's signature.
func TestKeyRevocation(t *testing.T) {
	k := testOperator(t, 1)
	h := testHistory(t, k) // roots 1, 2, 3 at t0, +1m, +2m
	w := ElementHex(el(42))
	from := t0.Add(30 * time.Second) // backdated: before the entry that revokes it
	e, err := k.NextEntry(h.Entries, el(4), t0.Add(3*time.Minute), RevokedKey{WorkerID: w, From: from})
	if err != nil {
		t.Fatal(err)
	}
	entries := append(h.Entries, e)
	signed, _ := k.History(entries, t0.Add(10*time.Minute))
	roots, err := signed.Verify(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		at   time.Time
		want bool
	}{{from.Add(-1), false}, {from, true}, {t0.Add(5 * time.Minute), true}} {
		if _, got := roots.KeyRevoked(w, tt.at); got != tt.want {
			t.Errorf("at %s: revoked %v, want %v", tt.at, got, tt.want)
		}
	}
	if _, got := roots.KeyRevoked(ElementHex(el(43)), t0.Add(5*time.Minute)); got {
		t.Error("another key revoked")
	}
	// The list is signed: dropping or moving a revocation breaks the entry.
	for name, edit := range map[string]func(*RootHistory){
		"revocation dropped": func(h *RootHistory) { h.Entries[3].Revoked = nil },
		"from moved later":   func(h *RootHistory) { h.Entries[3].Revoked[0].From = from.Add(time.Minute) },
		"worker changed":     func(h *RootHistory) { h.Entries[3].Revoked[0].WorkerID = ElementHex(el(43)) },
	} {
		c, _ := k.History(append([]RootEntry(nil), entries...), t0.Add(10*time.Minute))
		c.Entries[3].Revoked = append([]RevokedKey(nil), c.Entries[3].Revoked...)
		edit(c)
		if _, err := c.Verify(k.Public()); !errors.Is(err, ErrHistory) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A revocation cannot take effect after its own entry.
	if _, err := k.NextEntry(entries, el(5), t0.Add(4*time.Minute), RevokedKey{WorkerID: w, From: t0.Add(time.Hour)}); err == nil {
		t.Error("future revocation signed")
	}
	// Trust refuses a batch of the revoked key dated after From, even
	// proven under root 1, which was in force.
	mpc := &VerifyingKey{ID: "k2", Header: KeyHeader{Kind: "vk", Circuit: CircuitV2, Capacity: 2, Ceremony: "mpc"}}
	trust := Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots}
	if err := trust.Verify(structuralReceipt(t, el(1), t0.Add(45*time.Second))); !errors.Is(err, ErrKeyRevoked) {
		t.Errorf("backdated batch of a revoked key: %v", err)
	}
	if err := trust.Verify(structuralReceipt(t, el(1), t0.Add(15*time.Second))); !errors.Is(err, ErrProof) {
		t.Errorf("batch before the revocation: %v (want only the fake proof to fail)", err)
	}
}
