package zk

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/test"
)

// sha256Circuit checks sha256Bits(Msg) == Digest, bytes as field elements.
type sha256Circuit struct {
	Msg    []frontend.Variable
	Digest [32]frontend.Variable `gnark:",public"`
}

func (c *sha256Circuit) Define(api frontend.API) error {
	var bits []frontend.Variable
	for _, b := range c.Msg {
		bb := api.ToBinary(b, 8)
		for i := 7; i >= 0; i-- {
			bits = append(bits, bb[i])
		}
	}
	d := sha256Bits(api, bits)
	for j := range c.Digest {
		var v frontend.Variable = 0
		for i := range 8 {
			v = api.Add(api.Mul(v, 2), d[8*j+i])
		}
		api.AssertIsEqual(v, c.Digest[j])
	}
	return nil
}

func sha256Assignment(msg []byte) (*sha256Circuit, *sha256Circuit) {
	sum := sha256.Sum256(msg)
	w := &sha256Circuit{Msg: make([]frontend.Variable, len(msg))}
	for i, b := range msg {
		w.Msg[i] = b
	}
	for i, b := range sum {
		w.Digest[i] = b
	}
	return &sha256Circuit{Msg: make([]frontend.Variable, len(msg))}, w
}

// The gadget agrees with crypto/sha256 across padding boundaries (55/56
// bytes: one or two blocks; 64; 119/120; the 168-byte v2 preimage).
func TestSHA256GadgetMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{0, 1, 3, 55, 56, 63, 64, 119, 120, 168} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			msg := make([]byte, n)
			for i := range msg {
				msg[i] = byte(r.Uint32())
			}
			c, w := sha256Assignment(msg)
			if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err != nil {
				t.Fatalf("correct digest refused: %v", err)
			}
			bad := *w
			bad.Digest[n%32] = (sha256.Sum256(msg)[n%32] ^ 1)
			if err := test.IsSolved(c, &bad, ecc.BN254.ScalarField()); err == nil {
				t.Fatal("wrong digest accepted")
			}
			if n > 0 {
				flipped := *w
				flipped.Msg = append([]frontend.Variable(nil), w.Msg...)
				flipped.Msg[n/2] = msg[n/2] ^ 0x80
				if err := test.IsSolved(c, &flipped, ecc.BN254.ScalarField()); err == nil {
					t.Fatal("digest of another message accepted")
				}
			}
		})
	}
}

// FuzzSHA256Gadget: for any message (the 168-byte preimage length and
// others), the gadget accepts exactly the stdlib digest.
func FuzzSHA256Gadget(f *testing.F) {
	f.Add(make([]byte, 168), uint8(0))
	f.Add([]byte("abc"), uint8(5))
	f.Fuzz(func(t *testing.T, msg []byte, flip uint8) {
		if len(msg) > 200 {
			msg = msg[:200]
		}
		c, w := sha256Assignment(msg)
		if err := test.IsSolved(c, w, ecc.BN254.ScalarField()); err != nil {
			t.Fatalf("correct digest refused: %v", err)
		}
		bad := *w
		i := int(flip) % 32
		bad.Digest[i] = sha256.Sum256(msg)[i] ^ (1 << (flip % 8))
		if err := test.IsSolved(c, &bad, ecc.BN254.ScalarField()); err == nil {
			t.Fatal("wrong digest accepted")
		}
	})
}
