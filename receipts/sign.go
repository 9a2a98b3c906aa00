package receipts

import (
	"errors"
	"fmt"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"
)

// SignBatch signs a batch message (BatchMessage) with a worker's EdDSA key,
// hashing with Poseidon2 as the circuit does.
func SignBatch(key *eddsa.PrivateKey, msg fr.Element) ([]byte, error) {
	b := msg.Bytes()
	sig, err := key.Sign(b[:], poseidon2.NewMerkleDamgardHasher())
	if err != nil {
		return nil, fmt.Errorf("sign batch: %w", err)
	}
	return sig, nil
}

// ErrBadSignature is returned when a batch signature does not verify.
var ErrBadSignature = errors.New("worker signature does not verify")

// VerifyBatchSignature checks a worker's signature over a batch message.
func VerifyBatchSignature(pub *eddsa.PublicKey, msg fr.Element, sig []byte) error {
	b := msg.Bytes()
	ok, err := pub.Verify(sig, b[:], poseidon2.NewMerkleDamgardHasher())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}
