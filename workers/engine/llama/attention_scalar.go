//go:build !(goexperiment.simd && amd64)

package llama

// attentionVec reports whether a vector attention kernel handled the row;
// this build has none (see attention_simd.go).
func (m *model) attentionVec(out, q []float32, rw row, layer int, att []float32, kvMul int) bool {
	return false
}

// softmaxFast is softmax; the vector build has a faster one.
func softmaxFast(x []float32) { softmax(x) }

// swigluFast is swiglu; the vector build has a faster one.
func swigluFast(hb, hb2 []float32) { swiglu(hb, hb2) }

// attScratch is the attention scratch one row needs: every head's scores
// over the whole context.
func attScratch(c Config) int { return c.NHeads * c.SeqLen }
