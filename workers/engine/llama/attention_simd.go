//go:build goexperiment.simd && amd64

package llama

import (
	"math"
	"simd/archsimd"
)

// attentionVec is the attention of one row for heads of eight dimensions,
// vectorized with the same exactness rule as the matmul kernel: a vector
// multiply then a vector add per step (no fused multiply-add), each lane
// summing in run.c's order. Scores take eight positions per vector (a key
// tile holds a head's eight dimensions of 16 positions contiguously), each
// lane summing over the head's dimensions in order, and keep a running
// maximum per lane; the softmax computes its exponentials eight at a time
// with expf's float64 steps (expf8, or expf4 without AVX-512) and sums them
// in order, four heads interleaved; the weighted sum of values takes a head's
// eight dimensions per vector and four heads at once, each lane summing over
// positions in order. att needs attScratch(cfg) floats. It reports false (and
// does nothing) for other head sizes or without AVX2.
func (m *model) attentionVec(out, q []float32, rw row, layer int, att []float32, kvMul int) bool {
	c := m.cfg
	if c.HeadSize() != 8 || !simdAVX2 {
		return false
	}
	kvDim, n := c.KVDim(), rw.pos+1
	stride := (n + keyTile - 1) &^ (keyTile - 1) // scores per head, whole tiles
	kt := rw.kv.layerKeys(layer, kvDim)
	vc := rw.kv.v[layer*rw.kv.capacity*kvDim : layer*rw.kv.capacity*kvDim+n*kvDim]
	att = att[:c.NHeads*stride]
	for h := range c.NHeads {
		a := att[h*stride : (h+1)*stride]
		maxVal := scoresTiles(a, n, (*[8]float32)(q[h*8:]), kt, kvDim, (h/kvMul)*8, m.attScale)
		for t := n; t < stride; t++ {
			a[t] = maxVal // past the last position: harmless in the exponentials below
		}
		expTiles(a, maxVal)
	}
	h := 0
	for ; h+4 <= c.NHeads; h += 4 {
		s0, s1, s2, s3 := sum4(att[h*stride:h*stride+n], att[(h+1)*stride:(h+1)*stride+n],
			att[(h+2)*stride:(h+2)*stride+n], att[(h+3)*stride:(h+3)*stride+n])
		divideBy(att[h*stride:(h+1)*stride], s0)
		divideBy(att[(h+1)*stride:(h+2)*stride], s1)
		divideBy(att[(h+2)*stride:(h+3)*stride], s2)
		divideBy(att[(h+3)*stride:(h+4)*stride], s3)
	}
	for ; h < c.NHeads; h++ {
		var s float32
		for _, e := range att[h*stride : h*stride+n] {
			s += e
		}
		divideBy(att[h*stride:(h+1)*stride], s)
	}
	for h0 := 0; h0 < c.NHeads; h0 += 4 {
		if kvMul == 2 && h0+4 <= c.NHeads {
			weightedSumPairs(out[h0*8:h0*8+32], att[h0*stride:(h0+4)*stride], vc, h0/2*8, n, stride, kvDim)
			continue
		}
		weightedSumVec4(out, att, vc, h0, c.NHeads, n, stride, kvDim, kvMul)
	}
	archsimd.ClearAVXUpperBits()
	return true
}

// attScratch is the attention scratch one row needs: every head's scores
// over the whole context, in whole key tiles.
func attScratch(c Config) int {
	return c.NHeads * ((c.SeqLen + keyTile - 1) &^ (keyTile - 1))
}

// scoresTiles sets att[t] = (q·k_t)/scale for every position t of the key
// tiles covering positions below n, for the head whose eight dimensions
// start at ko in the layer's tiled keys kt, and returns the largest score
// of the positions below n (as maxOf: the first, replaced by every greater
// one). Scores of positions from n up to the tile's end are garbage.
func scoresTiles(att []float32, n int, q *[8]float32, kt []float32, kvDim, ko int, scale float32) float32 {
	q0, q1 := archsimd.BroadcastFloat32x8(q[0]), archsimd.BroadcastFloat32x8(q[1])
	q2, q3 := archsimd.BroadcastFloat32x8(q[2]), archsimd.BroadcastFloat32x8(q[3])
	q4, q5 := archsimd.BroadcastFloat32x8(q[4]), archsimd.BroadcastFloat32x8(q[5])
	q6, q7 := archsimd.BroadcastFloat32x8(q[6]), archsimd.BroadcastFloat32x8(q[7])
	sv := archsimd.BroadcastFloat32x8(scale)
	full := n / keyTile
	var mx archsimd.Float32x8
	tileStep := keyTile * kvDim
	off := ko * keyTile
	for b := range (n + keyTile - 1) / keyTile {
		k := (*[8 * keyTile]float32)(kt[off : off+8*keyTile])
		off += tileStep
		o := (*[keyTile]float32)(att[b*keyTile : b*keyTile+keyTile])
		var s0, s1 archsimd.Float32x8 // +0, as run.c's sums start
		s0 = s0.Add(q0.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[0:]))))
		s1 = s1.Add(q0.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[8:]))))
		s0 = s0.Add(q1.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[16:]))))
		s1 = s1.Add(q1.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[24:]))))
		s0 = s0.Add(q2.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[32:]))))
		s1 = s1.Add(q2.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[40:]))))
		s0 = s0.Add(q3.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[48:]))))
		s1 = s1.Add(q3.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[56:]))))
		s0 = s0.Add(q4.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[64:]))))
		s1 = s1.Add(q4.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[72:]))))
		s0 = s0.Add(q5.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[80:]))))
		s1 = s1.Add(q5.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[88:]))))
		s0 = s0.Add(q6.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[96:]))))
		s1 = s1.Add(q6.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[104:]))))
		s0 = s0.Add(q7.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[112:]))))
		s1 = s1.Add(q7.Mul(archsimd.LoadFloat32x8((*[8]float32)(k[120:]))))
		s0, s1 = s0.Div(sv), s1.Div(sv)
		s0.Store((*[8]float32)(o[0:]))
		s1.Store((*[8]float32)(o[8:]))
		if b < full {
			if b == 0 {
				mx = archsimd.BroadcastFloat32x8(o[0])
			}
			mx = s0.Merge(mx, s0.Greater(mx))
			mx = s1.Merge(mx, s1.Greater(mx))
		}
	}
	maxVal := att[0]
	if full > 0 {
		var lanes [8]float32
		mx.Store(&lanes)
		for _, v := range lanes {
			if v > maxVal {
				maxVal = v
			}
		}
	}
	for _, v := range att[full*keyTile : n] {
		if v > maxVal {
			maxVal = v
		}
	}
	return maxVal
}

// expTiles sets x[i] = expf(x[i] - maxVal) for the whole tiles of x.
func expTiles(x []float32, maxVal float32) {
	mv := archsimd.BroadcastFloat32x8(maxVal)
	lowest := archsimd.BroadcastFloat32x8(-103.97208)
	for i := 0; i+8 <= len(x); i += 8 {
		blk := (*[8]float32)(x[i : i+8])
		d := archsimd.LoadFloat32x8(blk).Sub(mv)
		switch {
		case d.GreaterEqual(lowest).ToBits() != 0xff:
			for k, v := range blk {
				blk[k] = expf(v - maxVal)
			}
		case simdAVX512:
			expf8(d).Store(blk)
		default:
			expf4(d.GetLo()).StoreSlice(blk[0:])
			expf4(d.GetHi()).StoreSlice(blk[4:])
		}
	}
}

// sum4 is the four in-order sums of four vectors of the same length,
// interleaved so that the additions overlap.
func sum4(x0, x1, x2, x3 []float32) (s0, s1, s2, s3 float32) {
	x1, x2, x3 = x1[:len(x0)], x2[:len(x0)], x3[:len(x0)]
	for t, e := range x0 {
		s0 += e
		s1 += x1[t]
		s2 += x2[t]
		s3 += x3[t]
	}
	return s0, s1, s2, s3
}

// weightedSumPairs sets out[k*8:(k+1)*8] = Σ_{t<n} att[k*stride+t]·v_t for
// the four heads k < 4 of two consecutive KV heads shared by pairs of query
// heads (kvMul 2), whose values start at vo in each position's kvDim values
// of vc.
func weightedSumPairs(out, att, vc []float32, vo, n, stride, kvDim int) {
	a0, a1, a2, a3 := att[0:n], att[stride:stride+n], att[2*stride:2*stride+n], att[3*stride:3*stride+n]
	a1, a2, a3 = a1[:len(a0)], a2[:len(a0)], a3[:len(a0)]
	var x0, x1, x2, x3 archsimd.Float32x8
	off := vo
	for t, p := range a0 {
		v := (*[16]float32)(vc[off : off+16])
		off += kvDim
		v0 := archsimd.LoadFloat32x8((*[8]float32)(v[0:]))
		v1 := archsimd.LoadFloat32x8((*[8]float32)(v[8:]))
		x0 = x0.Add(archsimd.BroadcastFloat32x8(p).Mul(v0))
		x1 = x1.Add(archsimd.BroadcastFloat32x8(a1[t]).Mul(v0))
		x2 = x2.Add(archsimd.BroadcastFloat32x8(a2[t]).Mul(v1))
		x3 = x3.Add(archsimd.BroadcastFloat32x8(a3[t]).Mul(v1))
	}
	o := (*[32]float32)(out[0:32])
	x0.Store((*[8]float32)(o[0:]))
	x1.Store((*[8]float32)(o[8:]))
	x2.Store((*[8]float32)(o[16:]))
	x3.Store((*[8]float32)(o[24:]))
}

// weightedSumVec4 sets out[h*8:(h+1)*8] = Σ_{t<n} att[h*stride+t]·v_t (the
// value slice of head h's KV head) for the heads h0..h0+3 below nHeads.
func weightedSumVec4(out, att, vc []float32, h0, nHeads, n, stride, kvDim, kvMul int) {
	h1, h2, h3 := min(h0+1, nHeads-1), min(h0+2, nHeads-1), min(h0+3, nHeads-1)
	a0, a1, a2, a3 := att[h0*stride:h0*stride+n], att[h1*stride:h1*stride+n], att[h2*stride:h2*stride+n], att[h3*stride:h3*stride+n]
	o0, o1, o2, o3 := h0/kvMul*8, h1/kvMul*8, h2/kvMul*8, h3/kvMul*8
	var x0, x1, x2, x3 archsimd.Float32x8
	for t := range n {
		v := vc[t*kvDim : (t+1)*kvDim]
		x0 = x0.Add(archsimd.BroadcastFloat32x8(a0[t]).Mul(archsimd.LoadFloat32x8Slice(v[o0:])))
		x1 = x1.Add(archsimd.BroadcastFloat32x8(a1[t]).Mul(archsimd.LoadFloat32x8Slice(v[o1:])))
		x2 = x2.Add(archsimd.BroadcastFloat32x8(a2[t]).Mul(archsimd.LoadFloat32x8Slice(v[o2:])))
		x3 = x3.Add(archsimd.BroadcastFloat32x8(a3[t]).Mul(archsimd.LoadFloat32x8Slice(v[o3:])))
	}
	x0.StoreSlice(out[h0*8:])
	if h0+1 < nHeads {
		x1.StoreSlice(out[h1*8:])
	}
	if h0+2 < nHeads {
		x2.StoreSlice(out[h2*8:])
	}
	if h0+3 < nHeads {
		x3.StoreSlice(out[h3*8:])
	}
}

// softmaxVec is softmax, bit-identical: the exponentials of blocks of
// eight come from the vector expf when every one of the block is in
// expfReduced's range (else from the scalar code), the sum runs in order,
// and the division is a vector one (divf equals the correctly rounded
// quotient, as VDIVPS is).
func softmaxVec(x []float32) {
	expShifted(x)
	var sum float32
	for _, e := range x {
		sum += e
	}
	divideBy(x, sum)
}

// expShifted sets x[i] = expf(x[i] - max(x)), as softmax does before
// summing.
func expShifted(x []float32) {
	maxVal := maxOf(x)
	expTiles(x, maxVal)
	tail := len(x) &^ 7
	for k, v := range x[tail:] {
		x[tail+k] = expf(v - maxVal)
	}
}

// maxOf is softmax's maximum: the first element, replaced by every
// greater one (a NaN never replaces it). Lanes keep their own running
// maximum and are merged at the end; the only possible difference from the
// scalar scan is the sign of a zero maximum, which changes no x - max.
func maxOf(x []float32) float32 {
	maxVal := x[0]
	i := 0
	if len(x) >= 16 {
		m := archsimd.BroadcastFloat32x8(maxVal)
		for ; i+8 <= len(x); i += 8 {
			v := archsimd.LoadFloat32x8((*[8]float32)(x[i:]))
			m = v.Merge(m, v.Greater(m))
		}
		var lanes [8]float32
		m.Store(&lanes)
		for _, v := range lanes {
			if v > maxVal {
				maxVal = v
			}
		}
	}
	for _, v := range x[i:] {
		if v > maxVal {
			maxVal = v
		}
	}
	return maxVal
}

// softmaxFast is softmaxVec where the CPU has AVX2, else softmax.
func softmaxFast(x []float32) {
	if simdAVX2 {
		softmaxVec(x)
		return
	}
	softmax(x)
}

// divideBy sets x[i] /= d.
func divideBy(x []float32, d float32) {
	dv := archsimd.BroadcastFloat32x8(d)
	i := 0
	for ; i+8 <= len(x); i += 8 {
		blk := (*[8]float32)(x[i:])
		archsimd.LoadFloat32x8(blk).Div(dv).Store(blk)
	}
	for k := i; k < len(x); k++ {
		x[k] /= d
	}
}

// expf8 is expfReduced of eight values in [-103.97208, 88.72284]
// (AVX-512), bit-identical to it (TestExpf8Exhaustive compares every
// float32 of the range). It reduces with a table of 16 entries instead of
// 256, held in two registers and looked up with one permutation, and makes
// up for the wider reduced range (|u| ≤ ln2/32) with a degree-7 polynomial,
// whose truncation error (about 1e-18) is below the 256-entry one's.
func expf8(x archsimd.Float32x8) archsimd.Float32x8 {
	// The constants are loaded from memory, not broadcast: the compiler
	// folds a vector load into the multiply or add that uses it, while a
	// broadcast costs a scalar load plus a shuffle on a vector port (a
	// tenth of a batched step's time when expf8 broadcast them).
	k := &exp16Consts
	shift := archsimd.LoadFloat64x8(&k[kShift])
	z := x.ConvertToFloat64().Mul(archsimd.LoadFloat64x8(&k[kInvLn2]))
	kd := z.Add(shift)
	kb := kd.AsUint64x8()
	r := z.Sub(kd.Sub(shift)) // e^x = 2^(k/16) · e^(r·ln2/16), |r| ≤ 1/2
	p := r.Mul(archsimd.LoadFloat64x8(&k[kC7])).Add(archsimd.LoadFloat64x8(&k[kC6]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kC5]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kC4]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kC3]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kC2]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kC1]))
	p = r.Mul(p).Add(archsimd.LoadFloat64x8(&k[kOne]))
	lo := archsimd.LoadFloat64x8(&exp16Table[0])
	hi := archsimd.LoadFloat64x8(&exp16Table[1])
	t := lo.ConcatPermute(hi, kb) // 2^((k mod 16)/16): the low four bits of kb
	scaled := t.AsUint64x8().Add(kb.ShiftAllRight(4).ShiftAllLeft(52))
	return scaled.AsFloat64x8().Mul(p).ConvertToFloat32()
}

// Indexes of expf8's constants in exp16Consts.
const (
	kShift = iota
	kInvLn2
	kC7
	kC6
	kC5
	kC4
	kC3
	kC2
	kC1
	kOne
	kCount
)

// exp16Consts holds expf8's constants, each repeated in eight lanes.
var exp16Consts = func() (c [kCount][8]float64) {
	for i, v := range [kCount]float64{expfShift, exp16InvLn2, exp16C7, exp16C6, exp16C5, exp16C4, exp16C3, exp16C2, exp16C1, 1} {
		for l := range c[i] {
			c[i][l] = v
		}
	}
	return c
}()

// exp16Table holds 2^(i/16) for i < 16, as two vectors of eight.
var exp16Table = func() (t [2][8]float64) {
	for i := range 16 {
		t[i/8][i%8] = math.Exp2(float64(i) / 16)
	}
	return t
}()

// Taylor coefficients of e^(r·ln2/16) in r: (ln2/16)^n / n!.
const (
	exp16InvLn2 = 16 / math.Ln2
	exp16L      = math.Ln2 / 16
	exp16C1     = exp16L
	exp16C2     = exp16C1 * exp16L / 2
	exp16C3     = exp16C2 * exp16L / 3
	exp16C4     = exp16C3 * exp16L / 4
	exp16C5     = exp16C4 * exp16L / 5
	exp16C6     = exp16C5 * exp16L / 6
	exp16C7     = exp16C6 * exp16L / 7
)

// expf4 is expfReduced of four values in [-103.97208, 88.72284], step for
// step in float64 with no fused multiply-add, so bit-identical to it.
func expf4(x archsimd.Float32x4) archsimd.Float32x4 {
	shift := archsimd.BroadcastFloat64x4(expfShift)
	z := x.ConvertToFloat64().Mul(archsimd.BroadcastFloat64x4(expfInvLn2))
	kd := z.Add(shift)
	kb := kd.AsUint64x4()
	r := z.Sub(kd.Sub(shift))
	p := r.Mul(archsimd.BroadcastFloat64x4(expfC4)).Add(archsimd.BroadcastFloat64x4(expfC3))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x4(expfC2))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x4(expfC1))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x4(1))
	var k, tb [4]uint64
	kb.Store(&k)
	tb[0], tb[1], tb[2], tb[3] = expfTable[uint8(k[0])], expfTable[uint8(k[1])], expfTable[uint8(k[2])], expfTable[uint8(k[3])]
	scaled := archsimd.LoadUint64x4(&tb).Add(kb.ShiftAllRight(8).ShiftAllLeft(52))
	return scaled.AsFloat64x4().Mul(p).ConvertToFloat32()
}

// swigluFast is swiglu (bit-identical), eight at a time with expf8 where
// the CPU has AVX-512 and every exponent of the block is in expfReduced's
// range, the scalar code otherwise.
func swigluFast(hb, hb2 []float32) {
	if !simdAVX512 {
		swiglu(hb, hb2)
		return
	}
	hb2 = hb2[:len(hb)]
	lo, hi := archsimd.BroadcastFloat32x8(-103.97208), archsimd.BroadcastFloat32x8(88.72284)
	one := archsimd.BroadcastFloat32x8(1)
	var zero archsimd.Float32x8
	i := 0
	for ; i+8 <= len(hb); i += 8 {
		blk := (*[8]float32)(hb[i:])
		val := archsimd.LoadFloat32x8(blk)
		m := zero.Sub(val)
		if m.GreaterEqual(lo).And(hi.GreaterEqual(m)).ToBits() != 0xff {
			swiglu(blk[:], hb2[i:i+8])
			continue
		}
		e := expf8(m)
		val.Mul(one.Div(one.Add(e))).Mul(archsimd.LoadFloat32x8((*[8]float32)(hb2[i:]))).Store(blk)
	}
	swiglu(hb[i:], hb2[i:])
	archsimd.ClearAVXUpperBits()
}
