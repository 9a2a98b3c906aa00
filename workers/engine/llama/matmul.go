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
	i := lo
	for ; i+4 <= hi; i += 4 {
		w0 := w[i*in : (i+1)*in]
		w1 := w[(i+1)*in : (i+2)*in]
		w2 := w[(i+2)*in : (i+3)*in]
		w3 := w[(i+3)*in : (i+4)*in]
		r := 0
		for ; r+2 <= n; r += 2 {
			x0 := x[r*in : (r+1)*in]
			x1 := x[(r+1)*in : (r+2)*in]
			dot4x2(out[r*d+i:r*d+i+4], out[(r+1)*d+i:(r+1)*d+i+4], w0, w1, w2, w3, x0, x1)
		}
		if r < n {
			dot4x1(out[r*d+i:r*d+i+4], w0, w1, w2, w3, x[r*in:(r+1)*in])
		}
	}
	for ; i < hi; i++ {
		wi := w[i*in : (i+1)*in]
		for r := 0; r < n; r++ {
			out[r*d+i] = dot(wi, x[r*in:(r+1)*in])
		}
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

func dot4x1(o, w0, w1, w2, w3, x []float32) {
	w1, w2, w3 = w1[:len(w0)], w2[:len(w0)], w3[:len(w0)]
	x = x[:len(w0)]
	o = o[:4]
	var a0, a1, a2, a3 float32
	for j, a := range w0 {
		p := x[j]
		a0 += float32(a * p)
		a1 += float32(w1[j] * p)
		a2 += float32(w2[j] * p)
		a3 += float32(w3[j] * p)
	}
	o[0], o[1], o[2], o[3] = a0, a1, a2, a3
}

func dot(w, x []float32) float32 {
	x = x[:len(w)]
	var s float32
	for j, a := range w {
		s += float32(a * x[j])
	}
	return s
}
