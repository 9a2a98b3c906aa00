package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// HashedKeyPrefix marks a key stored as the SHA-256 of the secret rather
// than the secret: "sha256:<64 hex digits>". The gateway keeps only
// digests and looks a presented key up by its digest, so such an entry
// needs no plaintext anywhere, and the timing of the lookup depends on the
// digest, never on the secret's bytes.
const HashedKeyPrefix = "sha256:"

// keyDigest is the digest a configured key (plain or "sha256:<hex>")
// authenticates.
func keyDigest(stored string) ([32]byte, error) {
	var d [32]byte
	hexDigest, hashed := strings.CutPrefix(stored, HashedKeyPrefix)
	if !hashed {
		return sha256.Sum256([]byte(stored)), nil
	}
	if len(hexDigest) != 2*len(d) {
		return d, fmt.Errorf("a %s key needs %d hex digits, got %d", HashedKeyPrefix, 2*len(d), len(hexDigest))
	}
	if _, err := hex.Decode(d[:], []byte(hexDigest)); err != nil {
		return d, fmt.Errorf("a %s key needs hex digits: %w", HashedKeyPrefix, err)
	}
	return d, nil
}

// plainSecret is stored unless it is a digest (for log redaction, which
// needs the secret itself).
func plainSecret(stored string) (string, bool) {
	return stored, !strings.HasPrefix(stored, HashedKeyPrefix)
}
