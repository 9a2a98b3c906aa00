package llama

// matmul computes out[r][i] = Σ_j w[i][j]·x[r][j] for rows r < n and output
// columns lo ≤ i < hi, where x is [n, in], w is [d, in] and out is [n, d],
// all row-major.
//
// Each dot product is summed strictly in j order, as run.c sums it, so the
// result is bit-identical to the reference. Speed comes from register
// blocking across independent dot products instead: pairs of input rows take
// three weight rows at a time (six accumulator chains, every load shared),
// a lone row six weight rows at a time. The weight-row blocks are the outer
// loop, so every weight is read once per step for the whole batch. (The
// block shapes were chosen by measurement on amd64: larger blocks run out of
// the 15 usable float registers and spill, and a 4x2 block ran at half the
// speed of 3x2.)
func matmul(out, x, w []float32, n, in, d, lo, hi int) {
	pairs := n &^ 1
	if pairs > 0 {
		i := lo
		for ; i+3 <= hi; i += 3 {
			w0 := w[i*in : (i+1)*in]
			w1 := w[(i+1)*in : (i+2)*in]
			w2 := w[(i+2)*in : (i+3)*in]
			for r := 0; r < pairs; r += 2 {
				dot3x2(out[r*d+i:r*d+i+3], out[(r+1)*d+i:(r+1)*d+i+3], w0, w1, w2,
					x[r*in:(r+1)*in], x[(r+1)*in:(r+2)*in])
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
	r := n - 1
	xr := x[r*in : (r+1)*in]
	o := out[r*d : (r+1)*d]
	i := lo
	for ; i+6 <= hi; i += 6 {
		dot6x1(o[i:i+6], w[i*in:(i+6)*in], xr)
	}
	for ; i < hi; i++ {
		o[i] = dot(w[i*in:(i+1)*in], xr)
	}
}

// dot3x2 sets o0[k] = w_k·x0 and o1[k] = w_k·x1 for k < 3.
func dot3x2(o0, o1, w0, w1, w2, x0, x1 []float32) {
	w1, w2 = w1[:len(w0)], w2[:len(w0)]
	x0, x1 = x0[:len(w0)], x1[:len(w0)]
	o0, o1 = o0[:3], o1[:3]
	var a00, a01, a10, a11, a20, a21 float32
	for j, a := range w0 {
		p, q := x0[j], x1[j]
		a00 += float32(a * p)
		a01 += float32(a * q)
		b := w1[j]
		a10 += float32(b * p)
		a11 += float32(b * q)
		c := w2[j]
		a20 += float32(c * p)
		a21 += float32(c * q)
	}
	o0[0], o0[1], o0[2] = a00, a10, a20
	o1[0], o1[1], o1[2] = a01, a11, a21
}

// dot6x1 sets o[k] = w_k·x for the six consecutive rows w_k of w.
func dot6x1(o, w, x []float32) {
	in := len(x)
	o = o[:6]
	w = w[:6*in]
	w0, w1, w2, w3, w4, w5 := w[0:in], w[in:2*in], w[2*in:3*in], w[3*in:4*in], w[4*in:5*in], w[5*in:6*in]
	w1, w2, w3, w4, w5 = w1[:len(w0)], w2[:len(w0)], w3[:len(w0)], w4[:len(w0)], w5[:len(w0)]
	x = x[:len(w0)]
	var a0, a1, a2, a3, a4, a5 float32
	for j, a := range w0 {
		p := x[j]
		a0 += float32(a * p)
		a1 += float32(w1[j] * p)
		a2 += float32(w2[j] * p)
		a3 += float32(w3[j] * p)
		a4 += float32(w4[j] * p)
		a5 += float32(w5[j] * p)
	}
	o[0], o[1], o[2], o[3], o[4], o[5] = a0, a1, a2, a3, a4, a5
}

func dot(w, x []float32) float32 {
	x = x[:len(w)]
	var s float32
	for j, a := range w {
		s += float32(a * x[j])
	}
	return s
}
