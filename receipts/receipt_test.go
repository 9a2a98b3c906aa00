package receipts

import (
	"encoding/json"
	"errors"
	"testing"

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
		{"proven without a matching batch", receiptSeeds[1], ErrModelVersion},
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
	f.Fuzz(func(t *testing.T, s string) {
		var r Receipt
		if json.Unmarshal([]byte(s), &r) != nil {
			return
		}
		if err := Verify(&r, nil, fr.Element{}); err == nil {
			t.Fatal("receipt verified without a key")
		}
	})
}
