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
// Tiles are 32 outputs: two vectors of 16 on AVX-512, or two passes of two
// vectors of eight on AVX2. The transposed copy
// costs about as much memory as the weights it copies (plus padding of d to
// a multiple of 32), so it is only made for checkpoints whose matrices come
// to at most maxTransposedBytes; larger ones keep the batch-lane kernel.

// wtTile is the outputs per tile of a transposed weight matrix.
const wtTile = 32

// transposedWeightsOK reports whether the CPU runs the transposed kernel.
func transposedWeightsOK() bool { return simdAVX512 || simdAVX2 }

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
	var res [3][wtTile]float32
	for t := range tiles {
		tw := tilesOf(wt[t*wtTile*in:], in)
		i0 := t * wtTile
		for r := 0; r < n; r += 3 {
			// A short last block repeats its last row; the extra results
			// are dropped.
			rows := min(3, n-r)
			x0 := x[r*in:]
			x1 := x[(r+rows/2)*in:]
			x2 := x[(r+rows-1)*in:]
			switch {
			case simdAVX512 && rows == 3:
				wtKernel3(&res, tw, x0, x1, x2)
			case simdAVX512:
				wtKernel2(&res, tw, x0, x2)
			default:
				wtKernel3x8(&res, tw, 0, x0, x1, x2)
				wtKernel3x8(&res, tw, 16, x0, x1, x2)
			}
			for b := range rows {
				o := out[(r+b)*d+i0 : (r+b+1)*d]
				copy(o[:min(wtTile, len(o))], res[b][:])
			}
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

// wtKernel2 is wtKernel3 for two rows (res[0] and res[1]).
func wtKernel2(res *[3][wtTile]float32, tw [][wtTile]float32, x0, x1 []float32) {
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

// wtKernel3 sets res[b][k] = Σ_j tw[j][k]·xb[j] for the three rows xb
// (AVX-512): two vectors of 16 outputs by three rows, six accumulators.
// Larger blocks (two vectors by four or six rows) spill — Go allocates 15
// vector registers and schedules every scalar load of x first — and ran
// slower than the batch-lane kernel.
func wtKernel3(res *[3][wtTile]float32, tw [][wtTile]float32, x0, x1, x2 []float32) {
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

// wtKernel3x8 is wtKernel3 on AVX2: the 16 outputs from column off of the
// tiles as two vectors of eight, into res[b][off:off+16].
func wtKernel3x8(res *[3][wtTile]float32, tw [][wtTile]float32, off int, x0, x1, x2 []float32) {
	x0, x1, x2 = x0[:len(tw)], x1[:len(tw)], x2[:len(tw)]
	off &= 16
	var a00, a01, a10, a11, a20, a21 archsimd.Float32x8
	for j := range tw {
		w0 := archsimd.LoadFloat32x8((*[8]float32)(tw[j][off : off+8]))
		w1 := archsimd.LoadFloat32x8((*[8]float32)(tw[j][off+8 : off+16]))
		b := archsimd.BroadcastFloat32x8(x0[j])
		a00 = a00.Add(w0.Mul(b))
		a01 = a01.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x8(x1[j])
		a10 = a10.Add(w0.Mul(b))
		a11 = a11.Add(w1.Mul(b))
		b = archsimd.BroadcastFloat32x8(x2[j])
		a20 = a20.Add(w0.Mul(b))
		a21 = a21.Add(w1.Mul(b))
	}
	a00.Store((*[8]float32)(res[0][off : off+8]))
	a01.Store((*[8]float32)(res[0][off+8 : off+16]))
	a10.Store((*[8]float32)(res[1][off : off+8]))
	a11.Store((*[8]float32)(res[1][off+8 : off+16]))
	a20.Store((*[8]float32)(res[2][off : off+8]))
	a21.Store((*[8]float32)(res[2][off+8 : off+16]))
	archsimd.ClearAVXUpperBits()
}
