package llama

// matmul computes out[r][i] = Σ_j w[i][j]·x[r][j] for rows r < n and output
// columns lo ≤ i < hi, where x is [n, in], w is [d, in] and out is [n, d],
// all row-major.
//
// Each dot product is summed strictly in j order, as run.c sums it, so the
// result is bit-identical to the reference. Speed comes from register
// blocking across independent dot products instead: four weight rows times two
// input rows share every load and keep eight accumulator chains in flight. The
// weight-row blocks are the outer loop, so every weight is read once per step
// for the whole batch.
func matmul(out, x, w []float32, n, in, d, lo, hi int) {
	pairs := n &^ 1
	i := lo
	if pairs > 0 {
		for ; i+4 <= hi; i += 4 {
			w0 := w[i*in : (i+1)*in]
			w1 := w[(i+1)*in : (i+2)*in]
			w2 := w[(i+2)*in : (i+3)*in]
			w3 := w[(i+3)*in : (i+4)*in]
			for r := 0; r < pairs; r += 2 {
				x0 := x[r*in : (r+1)*in]
				x1 := x[(r+1)*in : (r+2)*in]
				dot4x2(out[r*d+i:r*d+i+4], out[(r+1)*d+i:(r+1)*d+i+4], w0, w1, w2, w3, x0, x1)
			}
		}
		for ; i < hi; i++ {
			wi := w[i*in : (i+1)*in]
			for r := 0; r < pairs; r++ {
				out[r*d+i] = dot(wi, x[r*in:(r+1)*in])
			}
		}
	}
	if pairs == n {
		return
	}
	// The odd row: eight weight rows at a time against one input row.
	r := n - 1
	xr := x[r*in : (r+1)*in]
	o := out[r*d : (r+1)*d]
	i = lo
	for ; i+8 <= hi; i += 8 {
		dot8x1(o[i:i+8], w[i*in:(i+8)*in], xr)
	}
	for ; i < hi; i++ {
		o[i] = dot(w[i*in:(i+1)*in], xr)
	}
}

func dot4x2(o0, o1, w0, w1, w2, w3, x0, x1 []float32) {
	w1, w2, w3 = w1[:len(w0)], w2[:len(w0)], w3[:len(w0)]
	x0, x1 = x0[:len(w0)], x1[:len(w0)]
	o0, o1 = o0[:4], o1[:4]
	var a00, a10, a20, a30, a01, a11, a21, a31 float32
	for j, a := range w0 {
		b, c, e := w1[j], w2[j], w3[j]
		p, q := x0[j], x1[j]
		a00 += float32(a * p)
		a10 += float32(b * p)
		a20 += float32(c * p)
		a30 += float32(e * p)
		a01 += float32(a * q)
		a11 += float32(b * q)
		a21 += float32(c * q)
		a31 += float32(e * q)
	}
	o0[0], o0[1], o0[2], o0[3] = a00, a10, a20, a30
	o1[0], o1[1], o1[2], o1[3] = a01, a11, a21, a31
}

// dot8x1 sets o[k] = w_k·x for the eight consecutive rows w_k of w.
func dot8x1(o, w, x []float32) {
	in := len(x)
	o = o[:8]
	w = w[:8*in]
	w0, w1, w2, w3 := w[0:in], w[in:2*in], w[2*in:3*in], w[3*in:4*in]
	w4, w5, w6, w7 := w[4*in:5*in], w[5*in:6*in], w[6*in:7*in], w[7*in:8*in]
	w1, w2, w3, w4, w5, w6, w7 = w1[:len(w0)], w2[:len(w0)], w3[:len(w0)], w4[:len(w0)], w5[:len(w0)], w6[:len(w0)], w7[:len(w0)]
	x = x[:len(w0)]
	var a0, a1, a2, a3, a4, a5, a6, a7 float32
	for j, v := range w0 {
		p := x[j]
		a0 += float32(v * p)
		a1 += float32(w1[j] * p)
		a2 += float32(w2[j] * p)
		a3 += float32(w3[j] * p)
		a4 += float32(w4[j] * p)
		a5 += float32(w5[j] * p)
		a6 += float32(w6[j] * p)
		a7 += float32(w7[j] * p)
	}
	o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7] = a0, a1, a2, a3, a4, a5, a6, a7
}

func dot(w, x []float32) float32 {
	x = x[:len(w)]
	var s float32
	for j, a := range w {
		s += float32(a * x[j])
	}
	return s
}
