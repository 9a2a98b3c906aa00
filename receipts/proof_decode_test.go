package receipts

import (
	"bytes"
	"strings"
	"testing"
)

// A proof's commitment count is checked against its length before gnark
// allocates for it (2^32-1 points would be 256 GiB: the process dies).
func TestReadProofBoundsCommitments(t *testing.T) {
	compressed := append(bytes.Repeat([]byte{0x80}, 32+64+32), 0xff, 0xff, 0xff, 0xff)
	uncompressed := append(make([]byte, 64+128+64), 0xff, 0xff, 0xff, 0xff)
	for _, tt := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"compressed points", compressed, "commitments"},
		{"uncompressed points", uncompressed, "commitments"},
		{"count that fits no point", append(compressed[:128:128], 0, 0, 0, 1), "commitments"},
		{"empty", nil, "EOF"},
		{"no count", compressed[:128], "EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadProof(tt.raw); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one naming %q", err, tt.want)
			}
		})
	}
}
