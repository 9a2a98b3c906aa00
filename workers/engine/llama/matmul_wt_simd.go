//go:build goexperiment.simd && amd64

package llama

import (
	"simd/archsimd"
	"unsafe"
)

// This file is a second vector matmul for batches, vectorized ACROSS OUTPUT
// COLUMNS instead of across the batch: each weight matrix w ([d, in]) is
// transposed once, at load, into tiles of wtTile outputs,
// wt[tile][j][k] = w[tile*wtTile+k][j] (zero past d), and for each j the
// kernel loads the tile's weights as two vectors and multiplies them by one
// broadcast input value per batch row: acc[b][k] = acc[b][k] +
// wt[j][k]·x[b][j]. Each lane still sums its own output strictly in j order,
// a separate multiply then add with float32 rounding after each (never a
// fused multiply-add), so the result is bit-identical to matmul. What it
// saves is broadcasts: the batch-lane kernel broadcasts one weight per
// output per j (one broadcast per vector multiply); here one broadcast of
// x[b][j] serves both vectors of the tile (half a broadcast per multiply),
// the weights are plain vector loads, and results land contiguously in the
// output row. A register tile is two vectors by up to six rows: twelve
// accumulators, two weights and a broadcast — the 15 registers Go allocates.
//
// It needs AVX-512 (16 lanes, tiles of 32 outputs). The transposed copy
// costs about as much memory as the weights it copies (plus padding of d to
// a multiple of 32), so it is only made for checkpoints whose matrices come
// to at most maxTransposedBytes; larger ones keep the batch-lane kernel.

// wtTile is the outputs per tile of a transposed weight matrix.
const wtTile = 32

// wtShape picks the row kernels matmulWT uses (a variable so the kernel
// benchmark can compare them): 3 takes rows three at a time.
var wtShape = 3

// transposedWeightsOK reports whether the CPU runs the transposed kernel.
func transposedWeightsOK() bool { return simdAVX512 }

// transposedLen is the length of one matrix's transposed copy.
func transposedLen(d, in int) int { return (d + wtTile - 1) / wtTile * wtTile * in }

// transposeMatrix writes w ([d, in], row-major) into wt in tiles
// (see above); wt is transposedLen(d, in) long.
func transposeMatrix(wt, w []float32, d, in int) {
	tiles := (d + wtTile - 1) / wtTile
	for t := range tiles {
		tile := wt[t*wtTile*in : (t+1)*wtTile*in]
		for k := range wtTile {
			i := t*wtTile + k
			if i >= d {
				for j := range in {
					tile[j*wtTile+k] = 0
				}
				continue
			}
			for j, v := range w[i*in : (i+1)*in] {
				tile[j*wtTile+k] = v
			}
		}
	}
}

// matmulWT is matmul over all d outputs (lo = 0, hi = d) of n ≥ 1 rows of
// x with the transposed copy wt of w.
func matmulWT(out, x, wt []float32, n, in, d int) {
	tiles := (d + wtTile - 1) / wtTile
	wt = wt[:tiles*wtTile*in]
	x = x[:n*in]
	var res [6][wtTile]float32
	for t := range tiles {
		tw := tilesOf(wt[t*wtTile*in:], in)
		i0 := t * wtTile
		nk := min(wtTile, d-i0)
		r := 0
		for r < n {
			left := n - r
			var rows int
			switch {
			case left >= 3 && wtShape == 3:
				rows = 3
				wtKernel3(&res, tw, x[r*in:], x[(r+1)*in:], x[(r+2)*in:])
			case left >= 6 && left != 8 && wtShape == 6:
				rows = 6
				wtKernel6(&res, tw, x[r*in:], in)
			case left >= 4 && wtShape >= 4:
				rows = 4
				wtKernel4(&res, tw, x[r*in:], x[(r+1)*in:], x[(r+2)*in:], x[(r+3)*in:])
			case left >= 2:
				rows = 2
				wtKernel2(&res, tw, x[r*in:], x[(r+1)*in:])
			default:
				rows = 1
				wtKernel2(&res, tw, x[r*in:], x[r*in:])
			}
			for b := range rows {
				copy(out[(r+b)*d+i0:(r+b)*d+i0+nk], res[b][:nk])
			}
			r += rows
		}
	}
}

// tilesOf views the first n*wtTile floats of wt as n rows of a tile.
func tilesOf(wt []float32, n int) [][wtTile]float32 {
	wt = wt[:n*wtTile]
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*[wtTile]float32)(unsafe.Pointer(&wt[0])), n)
}

// wtKernel6 sets res[b][k] = Σ_j tw[j][k]·x[b*in+j] for six rows b.
func wtKernel6(res *[6][wtTile]float32, tw [][wtTile]float32, x []float32, in int) {
	x = x[:6*in]
	x0, x1, x2, x3, x4, x5 := x[:in], x[in:2*in], x[2*in:3*in], x[3*in:4*in], x[4*in:5*in], x[5*in:6*in]
	x0, x1, x2, x3, x4, x5 = x0[:len(tw)], x1[:len(tw)], x2[:len(tw)], x3[:len(tw)], x4[:len(tw)], x5[:len(tw)]
	var a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51 archsimd.Float32x16
	for j := range tw {
		w0 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][0:16]))
		w1 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][16:32]))
		b := archsimd.BroadcastFloat32x16(x0[j])
		a00 = a00.Add(w0.Mul(b))
		a01 = a01.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x1[j])
		a10 = a10.Add(w0.Mul(b))
		a11 = a11.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x2[j])
		a20 = a20.Add(w0.Mul(b))
		a21 = a21.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x3[j])
		a30 = a30.Add(w0.Mul(b))
		a31 = a31.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x4[j])
		a40 = a40.Add(w0.Mul(b))
		a41 = a41.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x5[j])
		a50 = a50.Add(w0.Mul(b))
		a51 = a51.Add(w1.Mul(b))
	}
	a00.Store((*[16]float32)(res[0][0:16]))
	a01.Store((*[16]float32)(res[0][16:32]))
	a10.Store((*[16]float32)(res[1][0:16]))
	a11.Store((*[16]float32)(res[1][16:32]))
	a20.Store((*[16]float32)(res[2][0:16]))
	a21.Store((*[16]float32)(res[2][16:32]))
	a30.Store((*[16]float32)(res[3][0:16]))
	a31.Store((*[16]float32)(res[3][16:32]))
	a40.Store((*[16]float32)(res[4][0:16]))
	a41.Store((*[16]float32)(res[4][16:32]))
	a50.Store((*[16]float32)(res[5][0:16]))
	a51.Store((*[16]float32)(res[5][16:32]))
	archsimd.ClearAVXUpperBits()
}

// wtKernel4 is wtKernel6 for four rows.
func wtKernel4(res *[6][wtTile]float32, tw [][wtTile]float32, x0, x1, x2, x3 []float32) {
	x0, x1, x2, x3 = x0[:len(tw)], x1[:len(tw)], x2[:len(tw)], x3[:len(tw)]
	var a00, a01, a10, a11, a20, a21, a30, a31 archsimd.Float32x16
	for j := range tw {
		w0 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][0:16]))
		w1 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][16:32]))
		b := archsimd.BroadcastFloat32x16(x0[j])
		a00 = a00.Add(w0.Mul(b))
		a01 = a01.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x1[j])
		a10 = a10.Add(w0.Mul(b))
		a11 = a11.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x2[j])
		a20 = a20.Add(w0.Mul(b))
		a21 = a21.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x3[j])
		a30 = a30.Add(w0.Mul(b))
		a31 = a31.Add(w1.Mul(b))
	}
	a00.Store((*[16]float32)(res[0][0:16]))
	a01.Store((*[16]float32)(res[0][16:32]))
	a10.Store((*[16]float32)(res[1][0:16]))
	a11.Store((*[16]float32)(res[1][16:32]))
	a20.Store((*[16]float32)(res[2][0:16]))
	a21.Store((*[16]float32)(res[2][16:32]))
	a30.Store((*[16]float32)(res[3][0:16]))
	a31.Store((*[16]float32)(res[3][16:32]))
	archsimd.ClearAVXUpperBits()
}

// wtKernel2 is wtKernel6 for two rows.
func wtKernel2(res *[6][wtTile]float32, tw [][wtTile]float32, x0, x1 []float32) {
	x0, x1 = x0[:len(tw)], x1[:len(tw)]
	var a00, a01, a10, a11 archsimd.Float32x16
	for j := range tw {
		w0 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][0:16]))
		w1 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][16:32]))
		b := archsimd.BroadcastFloat32x16(x0[j])
		a00 = a00.Add(w0.Mul(b))
		a01 = a01.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x1[j])
		a10 = a10.Add(w0.Mul(b))
		a11 = a11.Add(w1.Mul(b))
	}
	a00.Store((*[16]float32)(res[0][0:16]))
	a01.Store((*[16]float32)(res[0][16:32]))
	a10.Store((*[16]float32)(res[1][0:16]))
	a11.Store((*[16]float32)(res[1][16:32]))
	archsimd.ClearAVXUpperBits()
}

// wtKernel3 is wtKernel6 for three rows.
func wtKernel3(res *[6][wtTile]float32, tw [][wtTile]float32, x0, x1, x2 []float32) {
	x0, x1, x2 = x0[:len(tw)], x1[:len(tw)], x2[:len(tw)]
	var a00, a01, a10, a11, a20, a21 archsimd.Float32x16
	for j := range tw {
		w0 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][0:16]))
		w1 := archsimd.LoadFloat32x16((*[16]float32)(tw[j][16:32]))
		b := archsimd.BroadcastFloat32x16(x0[j])
		a00 = a00.Add(w0.Mul(b))
		a01 = a01.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x1[j])
		a10 = a10.Add(w0.Mul(b))
		a11 = a11.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x16(x2[j])
		a20 = a20.Add(w0.Mul(b))
		a21 = a21.Add(w1.Mul(b))
	}
	a00.Store((*[16]float32)(res[0][0:16]))
	a01.Store((*[16]float32)(res[0][16:32]))
	a10.Store((*[16]float32)(res[1][0:16]))
	a11.Store((*[16]float32)(res[1][16:32]))
	a20.Store((*[16]float32)(res[2][0:16]))
	a21.Store((*[16]float32)(res[2][16:32]))
	archsimd.ClearAVXUpperBits()
}
