package receipts

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

var receiptSeeds = []string{
	`{"version":1,"id":"rcpt_1","status":"pending","request_id":"r","request_digest":"` + hex64 + `","response_digest":"` + hex64 + `","time":"2026-01-01T00:00:00Z","model":"m","model_digest":"` + hex64 + `"}`,
	`{"version":1,"status":"proven","request_id":"r","request_digest":"` + hex64 + `","response_digest":"` + hex64 + `","time":"2026-01-01T00:00:00Z","model":"m","model_digest":"` + hex64 + `","batch":{"capacity":8,"index":9,"path":["0x1","0x2","0x3"],"public":{"root":"0x1","model_version":"0x2","registry_root":"0x3","worker_id":"0x4","leaf_count":1}}}`,
	`{"version":2}`,
	`{}`,
}

const hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestVerifyRejectsWithoutProof(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"pending", receiptSeeds[0], ErrNotProven},
		{"proven with a non-canonical batch", receiptSeeds[1], ErrEncoding},
		{"future version", receiptSeeds[2], ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Receipt
			if err := json.Unmarshal([]byte(tt.in), &r); err != nil {
				t.Fatal(err)
			}
			if err := Verify(&r, nil, fr.Element{}); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzVerify feeds arbitrary receipt JSON to Verify: it must fail cleanly,
// never panic, and never accept a receipt without a valid proof.
func FuzzVerify(f *testing.F) {
	for _, s := range receiptSeeds {
		f.Add(s)
	}
	f.Add(canonicalReceiptJSON(f))
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReceipt([]byte(s))
		if err != nil {
			return
		}
		if err := Verify(r, nil, fr.Element{}); err == nil {
			t.Fatal("receipt verified without a key")
		}
		if err := (&Trust{}).Verify(r); err == nil {
			t.Fatal("receipt verified with nothing pinned")
		}
	})
}

// structuralReceipt is a proven-looking v2 receipt whose leaf, path, model
// version and worker are consistent, so only trust decisions (key, root,
// times) and the proof itself can fail it.
func structuralReceipt(t *testing.T, registryRoot fr.Element, batchTime time.Time) *Receipt {
	t.Helper()
	r := &Receipt{Version: Version, ID: "rcpt_s", Status: StatusProven, RequestID: "req-s", RequestDigest: hex64,
		ResponseDigest: hex64, Subject: "alice", Time: batchTime.Add(-time.Second), Model: "m", ModelDigest: hex64,
		WorkerID: ElementHex(el(42)), PromptTokens: 3, CompletionTokens: 4}
	_, mv, leaf, err := r.LeafFields()
	if err != nil {
		t.Fatal(err)
	}
	r.ModelVersion, r.Leaf = ElementHex(mv), ElementHex(leaf)
	root := MerkleRoot([]fr.Element{leaf, {}})
	bt := batchTime.UTC()
	r.Batch = &BatchProof{Circuit: CircuitV2, Capacity: 2, Index: 0, Path: []string{ElementHex(fr.Element{})},
		Public: BatchPublic{Root: ElementHex(root), ModelVersion: r.ModelVersion, RegistryRoot: ElementHex(registryRoot),
			WorkerID: r.WorkerID, LeafCount: 1, TotalPromptTokens: 3, TotalCompletionTokens: 4, Sequence: 1, Time: &bt},
		Signature: "AAAA", Proof: "AAAA", VerifyingKeyID: "k2", ProvenAt: bt}
	return r
}

// TestTrustPins plays the trust-root attacks against Trust.Verify without
// a proof: each is refused before the proof is looked at.
func TestTrustPins(t *testing.T) {
	k := testOperator(t, 1)
	roots, err := testHistory(t, k).Verify(k.Public()) // roots 1, 2, 3 from t0, t0+1m, t0+2m; as of t0+10m
	if err != nil {
		t.Fatal(err)
	}
	mpc := &VerifyingKey{ID: "k2", Header: KeyHeader{Kind: "vk", Circuit: CircuitV2, Capacity: 2, Ceremony: "mpc"}}
	dev := &VerifyingKey{ID: "k2", Header: KeyHeader{Kind: "vk", Circuit: CircuitV2, Capacity: 2, Ceremony: "dev"}}
	v1key := &VerifyingKey{ID: "k2", Header: KeyHeader{Kind: "vk", Circuit: CircuitV1, Capacity: 2, Ceremony: "mpc"}}
	for _, tt := range []struct {
		name  string
		trust Trust
		r     *Receipt
		want  error
	}{
		{"everything pinned: only the (fake) proof fails", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrProof},
		{"development key allowed: only the proof fails", Trust{Keys: map[string]*VerifyingKey{"k2": dev}, Roots: roots, AllowDevKeys: true},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrProof},
		{"key not pinned", Trust{Keys: map[string]*VerifyingKey{"other": mpc}, Roots: roots},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrVerifyingKey},
		{"development key", Trust{Keys: map[string]*VerifyingKey{"k2": dev}, Roots: roots},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrDevKey},
		{"key for another circuit", Trust{Keys: map[string]*VerifyingKey{"k2": v1key}, Roots: roots},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrVerifyingKey},
		{"no history pinned", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}},
			structuralReceipt(t, el(2), t0.Add(90*time.Second)), ErrRegistryRoot},
		{"root of an earlier entry", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(1), t0.Add(90*time.Second)), ErrRegistryRoot},
		{"root of a later entry", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(3), t0.Add(90*time.Second)), ErrRegistryRoot},
		{"root the operator never signed", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(99), t0.Add(90*time.Second)), ErrRegistryRoot},
		{"batch before the first root", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(1), t0.Add(-time.Second)), ErrNoRootAt},
		{"batch after the history's head", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			structuralReceipt(t, el(3), t0.Add(11*time.Minute)), ErrStaleHistory},
		{"batch time missing", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			func() *Receipt {
				r := structuralReceipt(t, el(2), t0.Add(90*time.Second))
				r.Batch.Public.Time = nil
				return r
			}(), ErrBatchTime},
		{"receipt after its batch", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			func() *Receipt {
				r := structuralReceipt(t, el(2), t0.Add(90*time.Second))
				r.Time = r.Batch.Public.Time.Add(time.Nanosecond)
				_, _, leaf, _ := r.LeafFields()
				r.Leaf = ElementHex(leaf)
				root := MerkleRoot([]fr.Element{leaf, {}})
				r.Batch.Public.Root = ElementHex(root)
				return r
			}(), ErrReceiptTime},
		{"v1 root trusted: only the proof fails", Trust{Keys: map[string]*VerifyingKey{"k2": v1key}, V1Roots: []fr.Element{el(2)}},
			func() *Receipt {
				r := structuralReceipt(t, el(2), t0)
				r.Batch.Circuit, r.Batch.Public.Time = CircuitV1, nil
				return r
			}(), ErrProof},
		{"v1 root not trusted", Trust{Keys: map[string]*VerifyingKey{"k2": v1key}, V1Roots: []fr.Element{el(5)}},
			func() *Receipt {
				r := structuralReceipt(t, el(2), t0)
				r.Batch.Circuit, r.Batch.Public.Time = CircuitV1, nil
				return r
			}(), ErrRegistryRoot},
		{"stated model version differs", Trust{Keys: map[string]*VerifyingKey{"k2": mpc}, Roots: roots},
			func() *Receipt {
				r := structuralReceipt(t, el(2), t0.Add(90*time.Second))
				r.ModelVersion = ElementHex(el(8))
				return r
			}(), ErrModelVersion},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.trust.Verify(tt.r); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
