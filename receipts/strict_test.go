package receipts

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// canonicalReceiptJSON is a proven v2 receipt in its one canonical form
// (its values need not verify: parsing is what is tested).
func canonicalReceiptJSON(t testing.TB) string {
	bt := time.Date(2026, 3, 1, 12, 0, 1, 500, time.UTC)
	r := Receipt{
		Version: 1, ID: "rcpt_1", Status: StatusProven, Cursor: "7",
		RequestID: "req-1", RequestDigest: hex64, ResponseDigest: hex64, Subject: "alice",
		Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Model: "m", ModelDigest: hex64,
		WorkerID: "0x" + hex64, PromptTokens: 21, CompletionTokens: 5,
		ModelVersion: "0x" + hex64, Leaf: "0x" + hex64,
		Batch: &BatchProof{Circuit: CircuitV2, Capacity: 8, Index: 1, Path: []string{"0x" + hex64, "0x" + hex64, "0x" + hex64},
			Public: BatchPublic{Root: "0x" + hex64, ModelVersion: "0x" + hex64, RegistryRoot: "0x" + hex64, WorkerID: "0x" + hex64,
				LeafCount: 2, TotalPromptTokens: 40, TotalCompletionTokens: 10, Sequence: 3, Time: &bt},
			Signature: "AAEC", Proof: "AAECAw==", VerifyingKeyID: "tollgate-batch-v2-8-0011223344ff", ProvenAt: bt.Add(time.Second)},
	}
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type receiptAttack struct {
	name string
	in   string
}

// receiptAttacks are re-encodings of a canonical receipt that another
// (case-sensitive or stricter) parser reads differently, or that are a
// second encoding of the same value. Every one must be refused. All but
// three were accepted by the encoding/json decoding `tollgate verify` used
// before strict parsing (DisallowUnknownFields only).
func receiptAttacks(base string) []receiptAttack {
	rep := func(old, new string) string {
		if !strings.Contains(base, old) {
			panic("attack base lacks " + old)
		}
		return strings.Replace(base, old, new, 1)
	}
	up := strings.ToUpper(hex64)
	return []receiptAttack{
		{"case-variant duplicate prompt_tokens (issue 14)", rep(`"prompt_tokens":21`, `"prompt_tokens":999999,"PROMPT_TOKENS":21`)},
		{"case-variant duplicate subject", rep(`"subject":"alice"`, `"subject":"mallory","SUBJECT":"alice"`)},
		{"case-variant key alone", rep(`"prompt_tokens":21`, `"Prompt_Tokens":21`)},
		{"exact duplicate key", rep(`"prompt_tokens":21`, `"prompt_tokens":999999,"prompt_tokens":21`)},
		{"duplicate key in batch", rep(`"leaf_count":2`, `"leaf_count":2,"leaf_count":2`)},
		{"duplicate key in public", rep(`"total_prompt_tokens":40`, `"total_prompt_tokens":4000,"total_prompt_tokens":40`)},
		{"case-variant key in public", rep(`"total_prompt_tokens":40`, `"total_prompt_tokens":4000,"Total_Prompt_Tokens":40`)},
		{"unknown field", rep(`"version":1`, `"version":1,"note":"x"`)},
		{"uppercase request digest", rep(`"request_digest":"`+hex64, `"request_digest":"`+up)},
		{"uppercase model digest", rep(`"model_digest":"`+hex64, `"model_digest":"`+up)},
		{"uppercase worker ID hex", rep(`"worker_id":"0x`+hex64, `"worker_id":"0x`+up)},
		{"worker ID missing 0x", rep(`"worker_id":"0x`+hex64, `"worker_id":"`+hex64)},
		{"worker ID 0X prefix", rep(`"worker_id":"0x`+hex64, `"worker_id":"0X`+hex64)},
		{"short field element", rep(`"root":"0x`+hex64+`"`, `"root":"0x1"`)},
		{"field element >= r", rep(`"root":"0x`+hex64+`"`, `"root":"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"`)},
		{"path sibling uppercase", rep(`"path":["0x`+hex64, `"path":["0x`+up)},
		{"time in another zone", rep(`"time":"2026-03-01T12:00:00Z"`, `"time":"2026-03-01T13:00:00+01:00"`)},
		{"time +00:00", rep(`"time":"2026-03-01T12:00:00Z"`, `"time":"2026-03-01T12:00:00+00:00"`)},
		{"time trailing zero fraction", rep(`"time":"2026-03-01T12:00:00Z"`, `"time":"2026-03-01T12:00:00.000Z"`)},
		{"batch time in another zone", rep(`"time":"2026-03-01T12:00:01.0000005Z"`, `"time":"2026-03-01T07:00:01.0000005-05:00"`)},
		{"integer with exponent", rep(`"prompt_tokens":21`, `"prompt_tokens":2.1e1`)},
		{"negative zero", rep(`"index":1`, `"index":-0`)},
		{"float for an integer", rep(`"leaf_count":2`, `"leaf_count":2.0`)},
		{"null for a string", rep(`"request_id":"req-1"`, `"request_id":null`)},
		{"empty omitted field present", rep(`"version":1`, `"version":1,"error":""`)},
		{"missing required field", rep(`"completion_tokens":5,`, ``)},
		{"non-canonical base64 (no padding)", rep(`"proof":"AAECAw=="`, `"proof":"AAECAw"`)},
		{"non-canonical base64 (newline)", rep(`"proof":"AAECAw=="`, `"proof":"AAEC\nAw=="`)},
		{"non-canonical base64 (trailing bits)", rep(`"proof":"AAECAw=="`, `"proof":"AAECAx=="`)},
		{"base64 url alphabet", rep(`"signature":"AAEC"`, `"signature":"AA-_"`)},
		{"lone surrogate escape", rep(`"subject":"alice"`, `"subject":"alice\ud800"`)},
		{"lone low surrogate escape", rep(`"subject":"alice"`, `"subject":"\udc00alice"`)},
		{"invalid UTF-8", rep(`"subject":"alice"`, "\"subject\":\"alice\xff\"")},
		{"trailing data", base + `{}`},
		{"v2 batch without time", rep(`,"time":"2026-03-01T12:00:01.0000005Z"`, ``)},
		{"v1 batch with a time", rep(`"circuit":"`+CircuitV2+`"`, `"circuit":"`+CircuitV1+`"`)},
		{"unknown circuit", rep(`"circuit":"`+CircuitV2+`"`, `"circuit":"tollgate-batch-v3"`)},
		{"not an object", `[` + base + `]`},
		{"uppercase calldata", rep(`"vk_id":`, `"calldata":"0xDD78D609","vk_id":`)},
		{"calldata without 0x", rep(`"vk_id":`, `"calldata":"dd78d609","vk_id":`)},
	}
}

// TestParseReceiptRefusesReencodings plays each parser-differential and
// re-encoding attack.
func TestParseReceiptRefusesReencodings(t *testing.T) {
	base := canonicalReceiptJSON(t)
	if _, err := ParseReceipt([]byte(base)); err != nil {
		t.Fatalf("canonical receipt refused: %v", err)
	}
	for _, a := range receiptAttacks(base) {
		t.Run(a.name, func(t *testing.T) {
			r, err := ParseReceipt([]byte(a.in))
			if !errors.Is(err, ErrEncoding) {
				t.Fatalf("accepted (%+v), err = %v", r, err)
			}
			t.Log(err)
		})
	}
}

func TestParseReceiptAccepts(t *testing.T) {
	base := canonicalReceiptJSON(t)
	var v any
	if err := json.Unmarshal([]byte(base), &v); err != nil {
		t.Fatal(err)
	}
	indented, _ := json.MarshalIndent(v, "", "  ") // members sorted and indented
	pending := `{"version":1,"id":"rcpt_2","status":"pending","request_id":"r","request_digest":"` + hex64 + `","response_digest":"` + hex64 +
		`","time":"2026-01-01T00:00:00.123456789Z","model":"m","model_digest":"` + hex64 + `","worker_id":"0x` + hex64 +
		`","prompt_tokens":0,"completion_tokens":0,"model_version":"","leaf":""}`
	for _, tt := range []struct{ name, in string }{
		{"canonical", base},
		{"reordered and indented", string(indented)},
		{"escaped characters", strings.Replace(base, `"subject":"alice"`, `"subject":"\u0061lice\\\""`, 1)},
		{"surrogate pair", strings.Replace(base, `"subject":"alice"`, `"subject":"\ud83d\ude00"`, 1)},
		{"pending", pending},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseReceipt([]byte(tt.in)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FuzzParseReceipt: whatever ParseReceipt accepts re-encodes to a document
// it accepts again as the same receipt, and that re-encoding has the same
// tree as the input (one encoding per value); it never panics.
func FuzzParseReceipt(f *testing.F) {
	base := canonicalReceiptJSON(f)
	f.Add(base)
	for _, a := range receiptAttacks(base) {
		f.Add(a.in)
	}
	for _, s := range receiptSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReceipt([]byte(s))
		if err != nil {
			if !errors.Is(err, ErrEncoding) {
				t.Fatalf("error does not wrap ErrEncoding: %v", err)
			}
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseReceipt(out)
		if err != nil {
			t.Fatalf("re-encoding refused: %v\n%s", err, out)
		}
		if d := cmp.Diff(again, r); d != "" {
			t.Fatalf("re-parsed receipt differs (-got +want):\n%s", d)
		}
		in, _ := readTree([]byte(s))
		canon, _ := readTree(out)
		if err := diffTree("", in, canon); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkParseReceipt compares strict parsing with the plain
// encoding/json decoding it replaced.
func BenchmarkParseReceipt(b *testing.B) {
	raw := []byte(canonicalReceiptJSON(b))
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseReceipt(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r Receipt
			if err := json.Unmarshal(raw, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
