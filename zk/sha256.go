package zk

import (
	"math/big"

	"github.com/consensys/gnark/frontend"
)

// In-circuit SHA-256 over bits, with no api.Commit, lookup table or range
// checker: every wire is a bit constrained boolean by api.ToBinary or a
// product of such bits, so the Groth16 verifier stays commitment-free (the
// Solidity verifier needs no Pedersen commitment check).
//
// Costs in R1CS: an XOR of two bits is one multiplication (a + b - 2ab), of
// three bits two; Ch is one (g + e(f - g)), Maj two (ab + c(a + b - 2ab));
// each 32-bit addition of k words is one linear combination decomposed into
// 32 + ⌈log2 k⌉ bits by api.ToBinary (a hint whose outputs are each
// asserted boolean and recomposed: the sum is below 2^35 < r, so the bits
// are unique). Operations on constant bits (padding, initial state, round
// constants) fold into linear combinations and cost nothing.

// sha256Word is a 32-bit word, bit i of weight 2^i (little-endian order).
type sha256Word [32]frontend.Variable

var sha256K = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

var sha256IV = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

func constWord(v uint32) sha256Word {
	var w sha256Word
	for i := range w {
		w[i] = int((v >> i) & 1)
	}
	return w
}

// sha256Bits returns SHA-256 of a message given as bits, most significant
// bit of the first byte first (len(msg) must be a multiple of 8). Every
// element of msg must already be constrained to {0, 1}. The digest comes
// back in the same order: bit 0 is the top bit of the first digest byte.
func sha256Bits(api frontend.API, msg []frontend.Variable) []frontend.Variable {
	if len(msg)%8 != 0 {
		panic("sha256Bits: message is not whole bytes")
	}
	// Padding: a one bit, zeros to 448 mod 512, the 64-bit bit length.
	padded := append([]frontend.Variable(nil), msg...)
	padded = append(padded, 1)
	for len(padded)%512 != 448 {
		padded = append(padded, 0)
	}
	n := uint64(len(msg))
	for i := 63; i >= 0; i-- {
		padded = append(padded, int((n>>i)&1))
	}

	var h [8]sha256Word
	for i, v := range sha256IV {
		h[i] = constWord(v)
	}
	for blk := 0; blk < len(padded); blk += 512 {
		var w [16]sha256Word
		for j := range w {
			for i := range 32 {
				w[j][31-i] = padded[blk+32*j+i]
			}
		}
		h = sha256Compress(api, h, w)
	}
	out := make([]frontend.Variable, 0, 256)
	for _, word := range h {
		for i := 31; i >= 0; i-- {
			out = append(out, word[i])
		}
	}
	return out
}

// sha256Compress is one application of the compression function.
func sha256Compress(api frontend.API, h [8]sha256Word, block [16]sha256Word) [8]sha256Word {
	var w [64]sha256Word
	copy(w[:], block[:])
	for t := 16; t < 64; t++ {
		s0 := xorWords(api, rotr(w[t-15], 7), rotr(w[t-15], 18), shr(w[t-15], 3))
		s1 := xorWords(api, rotr(w[t-2], 17), rotr(w[t-2], 19), shr(w[t-2], 10))
		w[t] = addWords(api, s1, w[t-7], s0, w[t-16])
	}
	a, b, c, d, e, f, g, hh := h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
	for t := range 64 {
		S1 := xorWords(api, rotr(e, 6), rotr(e, 11), rotr(e, 25))
		var ch sha256Word
		for i := range ch {
			ch[i] = api.Add(g[i], api.Mul(e[i], api.Sub(f[i], g[i])))
		}
		S0 := xorWords(api, rotr(a, 2), rotr(a, 13), rotr(a, 22))
		var maj sha256Word
		for i := range maj {
			ab := api.Mul(a[i], b[i])
			maj[i] = api.Add(ab, api.Mul(c[i], api.Sub(api.Add(a[i], b[i]), api.Mul(2, ab))))
		}
		k := constWord(sha256K[t])
		// T1 = hh + S1 + ch + k + w[t]; a' = T1 + S0 + maj; e' = d + T1.
		t1 := []sha256Word{hh, S1, ch, k, w[t]}
		newA := addWords(api, append(t1, S0, maj)...)
		newE := addWords(api, append(t1, d)...)
		hh, g, f, e, d, c, b, a = g, f, e, newE, c, b, a, newA
	}
	for i, v := range []sha256Word{a, b, c, d, e, f, g, hh} {
		h[i] = addWords(api, h[i], v)
	}
	return h
}

func rotr(x sha256Word, n int) sha256Word {
	var out sha256Word
	for i := range out {
		out[i] = x[(i+n)%32]
	}
	return out
}

func shr(x sha256Word, n int) sha256Word {
	var out sha256Word
	for i := range out {
		if i+n < 32 {
			out[i] = x[i+n]
		} else {
			out[i] = 0
		}
	}
	return out
}

// xorBits is a ⊕ b = a + b - 2ab for bits a, b (one constraint unless one
// of them is a constant).
func xorBits(api frontend.API, a, b frontend.Variable) frontend.Variable {
	return api.Sub(api.Add(a, b), api.Mul(2, api.Mul(a, b)))
}

func xorWords(api frontend.API, x, y, z sha256Word) sha256Word {
	var out sha256Word
	for i := range out {
		out[i] = xorBits(api, xorBits(api, x[i], y[i]), z[i])
	}
	return out
}

// addWords is the sum of words modulo 2^32: the integer sum (below
// len(ws)·2^32, far below r) is decomposed into 32 + ⌈log2 len(ws)⌉
// boolean-constrained bits and the carries are dropped.
func addWords(api frontend.API, ws ...sha256Word) sha256Word {
	var sum frontend.Variable = 0
	for _, w := range ws {
		sum = api.Add(sum, wordValue(api, w))
	}
	carry := 0
	for 1<<carry < len(ws) {
		carry++
	}
	bits := api.ToBinary(sum, 32+carry)
	var out sha256Word
	copy(out[:], bits[:32])
	return out
}

func wordValue(api frontend.API, w sha256Word) frontend.Variable {
	var v frontend.Variable = 0
	for i, b := range w {
		v = api.Add(v, api.Mul(new(big.Int).Lsh(big.NewInt(1), uint(i)), b))
	}
	return v
}
