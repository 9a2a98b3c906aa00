//go:build goexperiment.simd && amd64

package llama

import (
	"math"
	"simd/archsimd"
)

// attentionVec is the attention of one row for heads of eight dimensions,
// vectorized with the same exactness rule as the matmul kernel: a vector
// multiply then a vector add per step (no fused multiply-add), each lane
// summing in run.c's order. Scores take eight positions per vector (the
// keys are stored transposed, so they are contiguous), each lane summing
// over the head's dimensions in order; the weighted sum of values takes a
// head's eight dimensions per vector and four heads at once, each lane
// summing over positions in order. The softmax between them computes its
// exponentials four at a time with expf's float64 steps (expf4) and sums
// them in order. It reports false (and does nothing) for other head sizes or
// without AVX2.
func (m *model) attentionVec(out, q []float32, rw row, layer int, att []float32, kvMul int) bool {
	c := m.cfg
	if c.HeadSize() != 8 || !simdAVX2 {
		return false
	}
	kvDim, capacity, n := c.KVDim(), rw.kv.capacity, rw.pos+1
	kt := rw.kv.k[layer*kvDim*capacity : (layer+1)*kvDim*capacity]
	vc := rw.kv.v[layer*capacity*kvDim : layer*capacity*kvDim+n*kvDim]
	att = att[:c.NHeads*n]
	for h := range c.NHeads {
		scoresVec8(att[h*n:(h+1)*n], (*[8]float32)(q[h*8:]), kt[(h/kvMul)*8*capacity:], capacity, m.attScale)
	}
	h := 0
	for ; h+4 <= c.NHeads; h += 4 {
		softmaxVec4(att[h*n:(h+1)*n], att[(h+1)*n:(h+2)*n], att[(h+2)*n:(h+3)*n], att[(h+3)*n:(h+4)*n])
	}
	for ; h < c.NHeads; h++ {
		softmaxVec(att[h*n : (h+1)*n])
	}
	for h0 := 0; h0 < c.NHeads; h0 += 4 {
		weightedSumVec4(out, att, vc, h0, c.NHeads, n, kvDim, kvMul)
	}
	archsimd.ClearAVXUpperBits()
	return true
}

// scoresVec8 sets att[t] = (q·k_t)/scale for t < len(att), where dimension
// i of key t is kt[i*stride+t]: sixteen positions per vector with AVX-512,
// then eight, then one.
func scoresVec8(att []float32, q *[8]float32, kt []float32, stride int, scale float32) {
	n := len(att)
	k0 := kt[0:n]
	k1 := kt[stride : stride+n]
	k2 := kt[2*stride : 2*stride+n]
	k3 := kt[3*stride : 3*stride+n]
	k4 := kt[4*stride : 4*stride+n]
	k5 := kt[5*stride : 5*stride+n]
	k6 := kt[6*stride : 6*stride+n]
	k7 := kt[7*stride : 7*stride+n]
	t := 0
	if simdAVX512 && n >= 16 {
		q0, q1 := archsimd.BroadcastFloat32x16(q[0]), archsimd.BroadcastFloat32x16(q[1])
		q2, q3 := archsimd.BroadcastFloat32x16(q[2]), archsimd.BroadcastFloat32x16(q[3])
		q4, q5 := archsimd.BroadcastFloat32x16(q[4]), archsimd.BroadcastFloat32x16(q[5])
		q6, q7 := archsimd.BroadcastFloat32x16(q[6]), archsimd.BroadcastFloat32x16(q[7])
		sv := archsimd.BroadcastFloat32x16(scale)
		for ; t+16 <= n; t += 16 {
			var s archsimd.Float32x16 // +0, as run.c's sum starts
			s = s.Add(q0.Mul(archsimd.LoadFloat32x16Slice(k0[t:])))
			s = s.Add(q1.Mul(archsimd.LoadFloat32x16Slice(k1[t:])))
			s = s.Add(q2.Mul(archsimd.LoadFloat32x16Slice(k2[t:])))
			s = s.Add(q3.Mul(archsimd.LoadFloat32x16Slice(k3[t:])))
			s = s.Add(q4.Mul(archsimd.LoadFloat32x16Slice(k4[t:])))
			s = s.Add(q5.Mul(archsimd.LoadFloat32x16Slice(k5[t:])))
			s = s.Add(q6.Mul(archsimd.LoadFloat32x16Slice(k6[t:])))
			s = s.Add(q7.Mul(archsimd.LoadFloat32x16Slice(k7[t:])))
			s.Div(sv).StoreSlice(att[t:])
		}
	}
	if n-t >= 8 {
		q0, q1 := archsimd.BroadcastFloat32x8(q[0]), archsimd.BroadcastFloat32x8(q[1])
		q2, q3 := archsimd.BroadcastFloat32x8(q[2]), archsimd.BroadcastFloat32x8(q[3])
		q4, q5 := archsimd.BroadcastFloat32x8(q[4]), archsimd.BroadcastFloat32x8(q[5])
		q6, q7 := archsimd.BroadcastFloat32x8(q[6]), archsimd.BroadcastFloat32x8(q[7])
		sv := archsimd.BroadcastFloat32x8(scale)
		for ; t+8 <= n; t += 8 {
			var s archsimd.Float32x8 // +0, as run.c's sum starts
			s = s.Add(q0.Mul(archsimd.LoadFloat32x8Slice(k0[t:])))
			s = s.Add(q1.Mul(archsimd.LoadFloat32x8Slice(k1[t:])))
			s = s.Add(q2.Mul(archsimd.LoadFloat32x8Slice(k2[t:])))
			s = s.Add(q3.Mul(archsimd.LoadFloat32x8Slice(k3[t:])))
			s = s.Add(q4.Mul(archsimd.LoadFloat32x8Slice(k4[t:])))
			s = s.Add(q5.Mul(archsimd.LoadFloat32x8Slice(k5[t:])))
			s = s.Add(q6.Mul(archsimd.LoadFloat32x8Slice(k6[t:])))
			s = s.Add(q7.Mul(archsimd.LoadFloat32x8Slice(k7[t:])))
			s.Div(sv).StoreSlice(att[t:])
		}
	}
	for ; t < n; t++ {
		var s float32
		s += float32(q[0] * k0[t])
		s += float32(q[1] * k1[t])
		s += float32(q[2] * k2[t])
		s += float32(q[3] * k3[t])
		s += float32(q[4] * k4[t])
		s += float32(q[5] * k5[t])
		s += float32(q[6] * k6[t])
		s += float32(q[7] * k7[t])
		att[t] = s / scale
	}
}

// weightedSumVec4 sets out[h*8:(h+1)*8] = Σ_t att[h*n+t]·v_t (the value
// slice of head h's KV head) for the heads h0..h0+3 below nHeads.
func weightedSumVec4(out, att, vc []float32, h0, nHeads, n, kvDim, kvMul int) {
	h1, h2, h3 := min(h0+1, nHeads-1), min(h0+2, nHeads-1), min(h0+3, nHeads-1)
	a0, a1, a2, a3 := att[h0*n:(h0+1)*n], att[h1*n:(h1+1)*n], att[h2*n:(h2+1)*n], att[h3*n:(h3+1)*n]
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

// softmaxVec4 is softmaxVec of four vectors of the same length, their four
// sums interleaved so that the additions (each in order) overlap.
func softmaxVec4(x0, x1, x2, x3 []float32) {
	expShifted(x0)
	expShifted(x1)
	expShifted(x2)
	expShifted(x3)
	x1, x2, x3 = x1[:len(x0)], x2[:len(x0)], x3[:len(x0)]
	var s0, s1, s2, s3 float32
	for t, e := range x0 {
		s0 += e
		s1 += x1[t]
		s2 += x2[t]
		s3 += x3[t]
	}
	divideBy(x0, s0)
	divideBy(x1, s1)
	divideBy(x2, s2)
	divideBy(x3, s3)
}

// expShifted sets x[i] = expf(x[i] - max(x)), as softmax does before
// summing.
func expShifted(x []float32) {
	maxVal := maxOf(x)
	mv := archsimd.BroadcastFloat32x8(maxVal)
	lowest := archsimd.BroadcastFloat32x8(-103.97208)
	i := 0
	for ; i+8 <= len(x); i += 8 {
		blk := (*[8]float32)(x[i:])
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
	for k, v := range x[i:] {
		x[i+k] = expf(v - maxVal)
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
	shift := archsimd.BroadcastFloat64x8(expfShift)
	z := x.ConvertToFloat64().Mul(archsimd.BroadcastFloat64x8(exp16InvLn2))
	kd := z.Add(shift)
	kb := kd.AsUint64x8()
	r := z.Sub(kd.Sub(shift)) // e^x = 2^(k/16) · e^(r·ln2/16), |r| ≤ 1/2
	p := r.Mul(archsimd.BroadcastFloat64x8(exp16C7)).Add(archsimd.BroadcastFloat64x8(exp16C6))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(exp16C5))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(exp16C4))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(exp16C3))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(exp16C2))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(exp16C1))
	p = r.Mul(p).Add(archsimd.BroadcastFloat64x8(1))
	lo := archsimd.LoadFloat64x8(&exp16Table[0])
	hi := archsimd.LoadFloat64x8(&exp16Table[1])
	t := lo.ConcatPermute(hi, kb) // 2^((k mod 16)/16): the low four bits of kb
	scaled := t.AsUint64x8().Add(kb.ShiftAllRight(4).ShiftAllLeft(52))
	return scaled.AsFloat64x8().Mul(p).ConvertToFloat32()
}

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
