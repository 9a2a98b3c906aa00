//go:build !(goexperiment.simd && amd64)

package llama

// transposedSize is the scratch matmulRows needs; the scalar build needs
// none.
func transposedSize(rows, in int) int { return 0 }

// matmulRows is matmul; the build with GOEXPERIMENT=simd on amd64 replaces
// it with a kernel vectorized across the batch (matmul_simd.go).
func matmulRows(xt, out, x, w []float32, n, in, d, lo, hi int) {
	matmul(out, x, w, n, in, d, lo, hi)
}

// prepareRows readies scratch for matmulPrepared; the scalar kernel needs
// none.
func prepareRows(xt, x []float32, n, in int) {}

// matmulPrepared is matmul.
func matmulPrepared(xt, out, x, w []float32, n, in, d, lo, hi int) {
	matmul(out, x, w, n, in, d, lo, hi)
}

// transposedWeightsOK reports whether the build and CPU run matmulWT: never
// in the scalar build.
func transposedWeightsOK() bool { return false }

func transposedLen(d, in int) int { return 0 }

func transposeMatrix(wt, w []float32, d, in int) {}

// matmulWT is never called in the scalar build (transposedWeightsOK).
func matmulWT(out, x, wt []float32, n, in, d int) { panic("llama: matmulWT without SIMD") }
