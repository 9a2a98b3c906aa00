package receipts

import (
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"
)

// WorkerID is the worker's identity as the batch circuit sees it:
// Poseidon2 (Merkle–Damgård, gnark-crypto default parameters) over the two
// affine coordinates of its EdDSA public key on BN254's twisted Edwards curve,
// rendered as 0x-prefixed lowercase hex of the canonical 32-byte big-endian
// field element. Workers and the gateway both name a worker by it.
func WorkerID(pub *eddsa.PublicKey) string {
	e := WorkerIDElement(pub)
	b := e.Bytes()
	return "0x" + hexString(b[:])
}

// WorkerIDElement is WorkerID as a field element.
func WorkerIDElement(pub *eddsa.PublicKey) fr.Element {
	h := poseidon2.NewMerkleDamgardHasher()
	x := pub.A.X.Bytes()
	y := pub.A.Y.Bytes()
	h.Write(x[:])
	h.Write(y[:])
	var e fr.Element
	e.SetBytes(h.Sum(nil))
	return e
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
