//go:build goexperiment.simd && amd64

package llama

import (
	"simd/archsimd"
	"unsafe"
)

// This file vectorizes the batched matmul ACROSS THE BATCH: for
// out[r][i] = Σ_j w[i][j]·x[r][j], the input rows are transposed into
// xt[j][lane] (lane = row within a chunk of 8 or 16 rows, padded with
// zeros), and for each output i and each j one vector multiply and one
// vector add (never a fused multiply-add) update every lane:
// acc[lane] = acc[lane] + w[i][j]·xt[j][lane]. Each lane therefore sums its
// own dot product strictly in j order with float32 rounding after every
// multiply and every add — exactly run.c's scalar loop — so the result is
// bit-identical to matmul while one instruction serves 8 (AVX2) or 16
// (AVX-512) rows. Six outputs are blocked per pass (more spill: Go allocates 16 vector
// registers) so that each xt[j]
// load is reused from a register.

var (
	simdAVX512 = archsimd.X86.AVX512()
	simdAVX2   = archsimd.X86.AVX2()
)

// simdMinRows is the smallest batch the vector kernel takes; a lone row
// would use one lane of eight, so it stays on the scalar kernel.
const simdMinRows = 2

// simdBlock is the outputs computed per pass of the vector kernel.
const simdBlock = 6

// transposedSize is the scratch matmulRows needs for rows input rows of in
// values each: rows rounded up to a whole 16-lane chunk.
func transposedSize(rows, in int) int { return (rows + 15) &^ 15 * in }

// matmulRows is matmul (same arguments and bit-identical results) using xt
// (at least transposedSize(n, in) long) as scratch: prepareRows then
// matmulPrepared.
func matmulRows(xt, out, x, w []float32, n, in, d, lo, hi int) {
	prepareRows(xt, x, n, in)
	matmulPrepared(xt, out, x, w, n, in, d, lo, hi)
}

// lanesFor is the vector width the kernel uses for n rows: 16 (AVX-512)
// or 8 (AVX2), or 0 for the scalar kernel — a lone row, or no AVX2.
func lanesFor(n int) int {
	switch {
	case n < simdMinRows:
		return 0
	case simdAVX512 && n > 8:
		return 16
	case simdAVX2:
		return 8
	case simdAVX512:
		return 16
	}
	return 0
}

// prepareRows readies xt for matmulPrepared calls on the n rows of x: the
// rows transposed into lanes, when the vector kernel takes them. Several
// matmuls of the same input share one preparation.
func prepareRows(xt, x []float32, n, in int) {
	if lanes := lanesFor(n); lanes > 0 {
		transposeRows(xt, x, n, in, lanes)
	}
}

// matmulPrepared is matmul for an xt that prepareRows readied for x, n and
// in; the vector kernel when the CPU has AVX2 or AVX-512 and the batch has
// simdMinRows rows or more, the scalar one otherwise.
func matmulPrepared(xt, out, x, w []float32, n, in, d, lo, hi int) {
	lanes := lanesFor(n)
	if lanes == 0 {
		matmul(out, x, w, n, in, d, lo, hi)
		return
	}
	matmulVec(xt, out, w, n, in, d, lo, hi, lanes)
}

// matmulVec is the vector kernel on rows transposed into chunks of lanes.
func matmulVec(xt, out, w []float32, n, in, d, lo, hi, lanes int) {
	if lo >= hi {
		return
	}
	chunks := (n + lanes - 1) / lanes
	xt = xt[:chunks*lanes*in]
	var res [simdBlock * 16]float32
	var rows [simdBlock][]float32
	for i := lo; i < hi; i += simdBlock {
		// A short last block repeats its last weight row; the extra
		// results are dropped.
		for k := range rows {
			ik := min(i+k, hi-1)
			rows[k] = w[ik*in : (ik+1)*in]
		}
		nk := min(simdBlock, hi-i)
		for c := range chunks {
			xc := xt[c*lanes*in : (c+1)*lanes*in]
			if lanes == 16 {
				kernel16(&res, xc, &rows)
			} else {
				kernel8(&res, xc, &rows)
			}
			nr := min(lanes, n-c*lanes)
			for k := range nk {
				rk := res[k*lanes : k*lanes+nr]
				o := out[c*lanes*d+i+k:]
				for b, v := range rk {
					o[b*d] = v
				}
			}
		}
	}
}

// transposeRows writes the n rows of x ([n, in]) into xt as chunks of lanes
// rows, each chunk [in][lanes], padding the last chunk's missing rows with
// zeros.
func transposeRows(xt, x []float32, n, in, lanes int) {
	for c := 0; c*lanes < n; c++ {
		xc := xt[c*lanes*in : (c+1)*lanes*in]
		for b := range lanes {
			r := c*lanes + b
			if r >= n {
				for j := range in {
					xc[j*lanes+b] = 0
				}
				continue
			}
			xr := x[r*in : (r+1)*in]
			for j, v := range xr {
				xc[j*lanes+b] = v
			}
		}
	}
}

// kernel16 sets res[k*16+lane] = Σ_j w[k][j]·xt[j*16+lane] for the six
// weight rows, summed in j order (AVX-512).
func kernel16(res *[simdBlock * 16]float32, xt []float32, w *[simdBlock][]float32) {
	w0 := w[0]
	in := len(w0)
	w1, w2, w3, w4, w5 := w[1][:in], w[2][:in], w[3][:in], w[4][:in], w[5][:in]
	var a0, a1, a2, a3, a4, a5 archsimd.Float32x16
	xs := lanesOf16(xt, in)
	for j := range xs {
		xv := archsimd.LoadFloat32x16(&xs[j])
		a0 = a0.Add(archsimd.BroadcastFloat32x16(w0[j]).Mul(xv))
		a1 = a1.Add(archsimd.BroadcastFloat32x16(w1[j]).Mul(xv))
		a2 = a2.Add(archsimd.BroadcastFloat32x16(w2[j]).Mul(xv))
		a3 = a3.Add(archsimd.BroadcastFloat32x16(w3[j]).Mul(xv))
		a4 = a4.Add(archsimd.BroadcastFloat32x16(w4[j]).Mul(xv))
		a5 = a5.Add(archsimd.BroadcastFloat32x16(w5[j]).Mul(xv))
	}
	a0.Store((*[16]float32)(res[0:]))
	a1.Store((*[16]float32)(res[16:]))
	a2.Store((*[16]float32)(res[32:]))
	a3.Store((*[16]float32)(res[48:]))
	a4.Store((*[16]float32)(res[64:]))
	a5.Store((*[16]float32)(res[80:]))
	archsimd.ClearAVXUpperBits()
}

// kernel8 sets res[k*8+lane] = Σ_j w[k][j]·xt[j*8+lane] for the six
// weight rows, summed in j order (AVX2).
func kernel8(res *[simdBlock * 16]float32, xt []float32, w *[simdBlock][]float32) {
	w0 := w[0]
	in := len(w0)
	w1, w2, w3, w4, w5 := w[1][:in], w[2][:in], w[3][:in], w[4][:in], w[5][:in]
	var a0, a1, a2, a3, a4, a5 archsimd.Float32x8
	xs := lanesOf8(xt, in)
	for j := range xs {
		xv := archsimd.LoadFloat32x8(&xs[j])
		a0 = a0.Add(archsimd.BroadcastFloat32x8(w0[j]).Mul(xv))
		a1 = a1.Add(archsimd.BroadcastFloat32x8(w1[j]).Mul(xv))
		a2 = a2.Add(archsimd.BroadcastFloat32x8(w2[j]).Mul(xv))
		a3 = a3.Add(archsimd.BroadcastFloat32x8(w3[j]).Mul(xv))
		a4 = a4.Add(archsimd.BroadcastFloat32x8(w4[j]).Mul(xv))
		a5 = a5.Add(archsimd.BroadcastFloat32x8(w5[j]).Mul(xv))
	}
	a0.Store((*[8]float32)(res[0:]))
	a1.Store((*[8]float32)(res[8:]))
	a2.Store((*[8]float32)(res[16:]))
	a3.Store((*[8]float32)(res[24:]))
	a4.Store((*[8]float32)(res[32:]))
	a5.Store((*[8]float32)(res[40:]))
	archsimd.ClearAVXUpperBits()
}

// lanesOf16 views the first n*16 floats of xt as n vectors of 16 (the
// kernels range over them without a bounds check per load).
func lanesOf16(xt []float32, n int) [][16]float32 {
	xt = xt[:n*16]
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*[16]float32)(unsafe.Pointer(&xt[0])), n)
}

// lanesOf8 views the first n*8 floats of xt as n vectors of 8.
func lanesOf8(xt []float32, n int) [][8]float32 {
	xt = xt[:n*8]
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*[8]float32)(unsafe.Pointer(&xt[0])), n)
}
