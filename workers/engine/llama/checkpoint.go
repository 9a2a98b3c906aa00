package llama

import (
	"encoding/binary"
	"fmt"
	"math"
)

// headerSize is the llama2.c legacy header: seven little-endian int32.
const headerSize = 7 * 4

// maxDim bounds every header field so that size arithmetic cannot overflow
// and a corrupt header cannot ask for absurd allocations.
const maxDim = 1 << 20

// Config is a checkpoint's hyperparameters, as in llama2.c's Config.
type Config struct {
	Dim         int  // transformer width
	HiddenDim   int  // FFN width
	NLayers     int  // number of layers
	NHeads      int  // query heads
	NKVHeads    int  // key/value heads (< NHeads for grouped-query attention)
	VocabSize   int  // tokens
	SeqLen      int  // maximum context length
	SharedClass bool // the classifier is the token embedding table
}

// HeadSize is Dim / NHeads.
func (c Config) HeadSize() int { return c.Dim / c.NHeads }

// KVDim is the width of one position's keys (or values) in one layer.
func (c Config) KVDim() int { return c.Dim * c.NKVHeads / c.NHeads }

// KVCacheBytes is the KV-cache memory a sequence of capacity positions
// takes across all layers, as newKVCache allocates it: keys rounded up to
// whole tiles of keyTile positions, values exact.
func (c Config) KVCacheBytes(capacity int) int64 {
	tiles := (capacity + keyTile - 1) / keyTile
	return int64(c.NLayers) * int64(tiles*keyTile+capacity) * int64(c.KVDim()) * 4
}

// weights holds the parameters in llama2.c's layout; each matrix is row-major
// [out, in], concatenated over layers.
type weights struct {
	tokenEmbedding []float32 // [vocab, dim]
	rmsAtt         []float32 // [layers, dim]
	wq             []float32 // [layers, dim, dim]
	wk             []float32 // [layers, kvDim, dim]
	wv             []float32 // [layers, kvDim, dim]
	wo             []float32 // [layers, dim, dim]
	rmsFFN         []float32 // [layers, dim]
	w1             []float32 // [layers, hidden, dim]
	w2             []float32 // [layers, dim, hidden]
	w3             []float32 // [layers, hidden, dim]
	rmsFinal       []float32 // [dim]
	wcls           []float32 // [vocab, dim]
}

// parseHeader reads and validates the seven-int32 header.
func parseHeader(data []byte) (Config, error) {
	if len(data) < headerSize {
		return Config{}, fmt.Errorf("checkpoint: truncated header: %d bytes, want %d", len(data), headerSize)
	}
	var h [7]int64
	for i := range h {
		h[i] = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
	}
	c := Config{
		Dim: int(h[0]), HiddenDim: int(h[1]), NLayers: int(h[2]), NHeads: int(h[3]),
		NKVHeads: int(h[4]), VocabSize: int(h[5]), SeqLen: int(h[6]), SharedClass: true,
	}
	if c.VocabSize < 0 {
		c.VocabSize = -c.VocabSize
		c.SharedClass = false
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"dim", c.Dim}, {"hidden_dim", c.HiddenDim}, {"n_layers", c.NLayers}, {"n_heads", c.NHeads},
		{"n_kv_heads", c.NKVHeads}, {"vocab_size", c.VocabSize}, {"seq_len", c.SeqLen}} {
		if f.v <= 0 || f.v > maxDim {
			return Config{}, fmt.Errorf("checkpoint: header field %s = %d out of range [1, %d]", f.name, f.v, maxDim)
		}
	}
	switch {
	case c.Dim%c.NHeads != 0:
		return Config{}, fmt.Errorf("checkpoint: dim %d not divisible by n_heads %d", c.Dim, c.NHeads)
	case c.NKVHeads > c.NHeads || c.NHeads%c.NKVHeads != 0:
		return Config{}, fmt.Errorf("checkpoint: n_heads %d not a multiple of n_kv_heads %d", c.NHeads, c.NKVHeads)
	case c.HeadSize()%2 != 0:
		return Config{}, fmt.Errorf("checkpoint: head size %d is odd; RoPE needs pairs", c.HeadSize())
	case c.VocabSize < 3:
		return Config{}, fmt.Errorf("checkpoint: vocab_size %d too small (needs unk, BOS, EOS)", c.VocabSize)
	}
	return c, nil
}

// floatCount is the number of float32 values the checkpoint body must hold.
// All fields are bounded by maxDim, so int64 arithmetic cannot overflow.
func (c Config) floatCount() int64 {
	dim, hidden, layers := int64(c.Dim), int64(c.HiddenDim), int64(c.NLayers)
	kv := int64(c.KVDim())
	n := int64(c.VocabSize)*dim + // token embedding
		layers*dim + // rms_att
		layers*dim*dim + 2*layers*dim*kv + layers*dim*dim + // wq, wk, wv, wo
		layers*dim + // rms_ffn
		3*layers*dim*hidden + // w1, w2, w3
		dim + // rms_final
		int64(c.SeqLen)*int64(c.HeadSize()) // freq_cis_real + freq_cis_imag (skipped)
	if !c.SharedClass {
		n += int64(c.VocabSize) * dim
	}
	return n
}

// parseCheckpoint decodes a whole llama2.c legacy checkpoint. The file must
// be exactly as long as its header says: a truncated or over-long file is an
// error, never a short read.
func parseCheckpoint(data []byte) (Config, *weights, error) {
	c, err := parseHeader(data)
	if err != nil {
		return Config{}, nil, err
	}
	body := int64(len(data) - headerSize)
	want := c.floatCount() * 4
	if body != want {
		return Config{}, nil, fmt.Errorf("checkpoint: body is %d bytes, header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, shared classifier %t, seq_len %d) needs %d",
			body, c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.VocabSize, c.SharedClass, c.SeqLen, want)
	}
	all := make([]float32, c.floatCount())
	for i := range all {
		all[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[headerSize+4*i:]))
	}
	dim, hidden, layers, kv := c.Dim, c.HiddenDim, c.NLayers, c.KVDim()
	take := func(n int) []float32 {
		s := all[:n:n]
		all = all[n:]
		return s
	}
	w := &weights{}
	w.tokenEmbedding = take(c.VocabSize * dim)
	w.rmsAtt = take(layers * dim)
	w.wq = take(layers * dim * dim)
	w.wk = take(layers * kv * dim)
	w.wv = take(layers * kv * dim)
	w.wo = take(layers * dim * dim)
	w.rmsFFN = take(layers * dim)
	w.w1 = take(layers * hidden * dim)
	w.w2 = take(layers * dim * hidden)
	w.w3 = take(layers * hidden * dim)
	w.rmsFinal = take(dim)
	take(c.SeqLen * c.HeadSize()) // legacy freq_cis_real and freq_cis_imag
	if c.SharedClass {
		w.wcls = w.tokenEmbedding
	} else {
		w.wcls = take(c.VocabSize * dim)
	}
	return c, w, nil
}
