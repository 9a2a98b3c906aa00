package llama

import (
	"math"
	"runtime"
	"sync/atomic"
	"time"
)

// model is a loaded checkpoint plus the tables the forward pass reuses.
type model struct {
	cfg Config
	w   *weights
	// wt is the matrices of w transposed for matmulWT (batches of two rows
	// or more), or nil where the CPU lacks the kernel or they would take
	// more than maxTransposedBytes.
	wt *transposedWeights
	// ropeCos/ropeSin[pos*half+i] rotate the pair (2i, 2i+1) of every head at
	// position pos, computed as run.c computes them.
	ropeCos, ropeSin []float32
	attScale         float32 // sqrtf(head_size); run.c divides by it
}

func newModel(cfg Config, w *weights) *model {
	hs := cfg.HeadSize()
	half := hs / 2
	m := &model{
		cfg: cfg, w: w,
		ropeCos:  make([]float32, cfg.SeqLen*half),
		ropeSin:  make([]float32, cfg.SeqLen*half),
		attScale: sqrtf(float32(hs)),
	}
	m.wt = newTransposedWeights(cfg, w)
	for i := 0; i < half; i++ {
		headDim := float32(2 * i)
		freq := 1 / float32(math.Pow(10000, float64(headDim/float32(hs))))
		for pos := 0; pos < cfg.SeqLen; pos++ {
			val := float32(pos) * freq
			m.ropeCos[pos*half+i] = float32(math.Cos(float64(val)))
			m.ropeSin[pos*half+i] = float32(math.Sin(float64(val)))
		}
	}
	return m
}

// transposedWeights holds each matrix of a checkpoint transposed for
// matmulWT, every layer's copy transposedLen long, layer after layer.
type transposedWeights struct {
	wq, wk, wv, wo, w1, w2, w3, wcls []float32
}

// newTransposedWeights transposes w's matrices, or returns nil where the
// CPU has no matmulWT or the copies would exceed maxTransposedBytes (they
// take about as much memory as the matrices themselves).
func newTransposedWeights(c Config, w *weights) *transposedWeights {
	if !transposedWeightsOK() || len(w.wq) == 0 {
		return nil
	}
	dim, kvDim, hidden, layers := c.Dim, c.KVDim(), c.HiddenDim, c.NLayers
	size := layers*(2*transposedLen(dim, dim)+2*transposedLen(kvDim, dim)+
		2*transposedLen(hidden, dim)+transposedLen(dim, hidden)) + transposedLen(c.VocabSize, dim)
	if size*4 > maxTransposedBytes {
		return nil
	}
	each := func(src []float32, d, in, count int) []float32 {
		n := transposedLen(d, in)
		dst := make([]float32, count*n)
		for l := range count {
			transposeMatrix(dst[l*n:(l+1)*n], src[l*d*in:(l+1)*d*in], d, in)
		}
		return dst
	}
	return &transposedWeights{
		wq:   each(w.wq, dim, dim, layers),
		wk:   each(w.wk, kvDim, dim, layers),
		wv:   each(w.wv, kvDim, dim, layers),
		wo:   each(w.wo, dim, dim, layers),
		w1:   each(w.w1, hidden, dim, layers),
		w2:   each(w.w2, dim, hidden, layers),
		w3:   each(w.w3, hidden, dim, layers),
		wcls: each(w.wcls, c.VocabSize, dim, 1),
	}
}

// maxTransposedBytes bounds the memory spent on transposed weights: 256 MiB
// covers checkpoints up to about 60M parameters (stories260K needs 1.1 MB);
// larger ones keep the batch-lane kernel alone.
const maxTransposedBytes = 256 << 20

// wtMinRows is the smallest batch matmulWT takes.
const wtMinRows = 2

// layerOf is layer l's part of a transposed matrix of d outputs and in
// inputs per layer.
func layerOf(wt []float32, l, d, in int) []float32 {
	n := transposedLen(d, in)
	return wt[l*n : (l+1)*n]
}

// kvCache holds one sequence's keys and values, room for capacity
// positions. Values are [layer][position][kvDim]. Keys are stored in tiles
// of keyTile positions, transposed within a tile:
// [layer][position/keyTile][kvDim][position%keyTile], so that the attention
// scores of consecutive positions read consecutive memory (and vectorize
// across positions) while one tile of a head is one short contiguous block.
type kvCache struct {
	k, v     []float32
	capacity int
	tiles    int // key tiles per layer: capacity rounded up to keyTile
}

// keyTile is the positions per tile of the key cache.
const keyTile = 16

func (m *model) newKVCache(capacity int) *kvCache {
	kvDim := m.cfg.KVDim()
	tiles := (capacity + keyTile - 1) / keyTile
	return &kvCache{
		k:        make([]float32, m.cfg.NLayers*tiles*keyTile*kvDim),
		v:        make([]float32, m.cfg.NLayers*capacity*kvDim),
		capacity: capacity,
		tiles:    tiles,
	}
}

// layerKeys is layer's part of the key cache.
func (kv *kvCache) layerKeys(layer, kvDim int) []float32 {
	n := kv.tiles * keyTile * kvDim
	return kv.k[layer*n : (layer+1)*n]
}

// keyAt is the index in a layer's keys of dimension c of position t.
func keyAt(kvDim, c, t int) int {
	return t/keyTile*keyTile*kvDim + c*keyTile + t%keyTile
}

// row is one token of one sequence in a batched forward step.
type row struct {
	token, pos int
	kv         *kvCache
	logits     bool // compute the classifier output for this row
	// smp, for a row with logits, samples its next token into
	// workspace.tokens within the row's part of the step, so that the
	// batch's sampling runs in parallel too (a sequence's sampler is only
	// ever used by the part that holds its rows).
	smp *sampler
}

// parallelMinRows is the smallest step split across helper goroutines:
// below it a step is too short to pay for the hand-off.
const parallelMinRows = 4

// rowCostPositions weighs a row's matmuls against its attention when a step
// is split: on stories260K at batch 16 one row's share of the matmuls costs
// about as much as attending over this many positions.
const rowCostPositions = 128

// workspace is the forward pass's scratch memory and its helper goroutines,
// sized once for the largest batch so that a step allocates nothing. It is
// used by one goroutine at a time (the engine's loop). Buffers hold one
// slice per row (x: [row][dim], and so on), so parts of a step that own
// disjoint rows never share memory except the per-part scratch they index
// by part.
type workspace struct {
	m                            *model
	maxRows                      int
	x, xb, xb2, q, k, v, hb, hb2 []float32
	att                          [][]float32 // per part: attention scores, [head][position]
	xt                           [][]float32 // per part: transposed matmul input (see matmulRows)
	xl, logits                   []float32   // rows that want logits, packed
	tokens                       []int       // per row: the token its smp sampled

	// The current step, read by the parts.
	rows    []row
	parts   int   // parts the current step is split into
	bounds  []int // rows of part p: bounds[p] ≤ r < bounds[p+1]
	helpers []*helper
	gen     atomic.Uint64 // steps handed to the helpers so far
	quit    atomic.Bool
}

// helper is a helper goroutine's hand-off state. A step is handed off by
// bumping workspace.gen and finished when every helper's done reaches it.
// Between steps a helper spins (yielding its P) for helperSpin before it
// parks on wake: on the VMs this runs on, waking a parked goroutine on an
// idle CPU took tens of microseconds, a large share of a 16-row step, and
// made two threads barely faster than one.
type helper struct {
	part     int
	done     atomic.Uint64 // the last step finished
	sleeping atomic.Bool   // parked on wake (or about to)
	wake     chan struct{} // capacity 1
}

// helperSpin is how long an idle helper polls for the next step before it
// parks; the engine loop's work between steps is far shorter.
const helperSpin = 200 * time.Microsecond

// newWorkspace sizes scratch for maxRows rows, of which at most
// maxLogitRows want logits, and starts threads-1 helper goroutines (stopped
// by close).
func (m *model) newWorkspace(maxRows, maxLogitRows, threads int) *workspace {
	c := m.cfg
	threads = max(threads, 1)
	ws := &workspace{
		m:       m,
		maxRows: maxRows,
		x:       make([]float32, maxRows*c.Dim),
		xb:      make([]float32, maxRows*c.Dim),
		xb2:     make([]float32, maxRows*c.Dim),
		q:       make([]float32, maxRows*c.Dim),
		k:       make([]float32, maxRows*c.KVDim()),
		v:       make([]float32, maxRows*c.KVDim()),
		hb:      make([]float32, maxRows*c.HiddenDim),
		hb2:     make([]float32, maxRows*c.HiddenDim),
		att:     make([][]float32, threads),
		xt:      make([][]float32, threads),
		xl:      make([]float32, maxRows*c.Dim),
		logits:  make([]float32, maxLogitRows*c.VocabSize),
		tokens:  make([]int, maxRows),
		bounds:  make([]int, threads+1),
	}
	for p := range ws.att {
		ws.att[p] = make([]float32, attScratch(c))
		ws.xt[p] = make([]float32, transposedSize(maxRows, max(c.Dim, c.HiddenDim)))
	}
	for p := 1; p < threads; p++ {
		h := &helper{part: p, wake: make(chan struct{}, 1)}
		ws.helpers = append(ws.helpers, h)
		go ws.helperLoop(h)
	}
	return ws
}

// helperLoop runs h's part of every step handed off until close.
func (ws *workspace) helperLoop(h *helper) {
	var seen uint64
	for {
		seen = ws.awaitStep(h, seen)
		if ws.quit.Load() {
			return
		}
		ws.runPart(h.part)
		h.done.Store(seen)
	}
}

// awaitStep waits for a step after seen and returns its number: polling,
// then parked once helperSpin has passed without one.
func (ws *workspace) awaitStep(h *helper, seen uint64) uint64 {
	start := time.Now()
	for spins := 0; ; spins++ {
		if g := ws.gen.Load(); g != seen {
			return g
		}
		runtime.Gosched() // let the engine's other goroutines have this P
		if spins%16 != 15 || time.Since(start) < helperSpin {
			continue
		}
		// Park. handOff reads sleeping after bumping gen, and this reads
		// gen after setting sleeping, so one of the two sees the other.
		h.sleeping.Store(true)
		if g := ws.gen.Load(); g != seen {
			h.sleeping.Store(false)
			return g
		}
		<-h.wake
		h.sleeping.Store(false)
		start = time.Now()
	}
}

// handOff starts the next step on every helper.
func (ws *workspace) handOff() uint64 {
	g := ws.gen.Add(1)
	for _, h := range ws.helpers {
		if h.sleeping.Load() {
			select {
			case h.wake <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
	}
	return g
}

// close stops the helper goroutines.
func (ws *workspace) close() {
	ws.quit.Store(true)
	ws.handOff()
	ws.helpers = nil
}

// forward runs one batched step: every row's token at its position, writing
// each row's keys and values into its sequence's cache. Afterwards ws.x holds
// each row's final hidden state (after the final RMSNorm) and ws.logits the
// classifier output of the rows with logits set, packed in row order. Rows
// of one sequence must appear in position order and consecutively; a row
// attends to every cached position up to its own, including those written
// by earlier rows of the same step.
//
// A large step is split by rows, whole sequences at a time, into parts of
// about equal cost, each run start to finish on its own goroutine: one
// hand-off per step, and no result depends on the split (every output is
// computed from its own row in the same order).
func (m *model) forward(ws *workspace, rows []row) {
	ws.rows = rows
	ws.split()
	if ws.parts == 1 {
		ws.runPart(0)
		ws.rows = nil
		return
	}
	g := ws.handOff()
	ws.runPart(0)
	for _, h := range ws.helpers {
		for spins := 0; h.done.Load() != g; spins++ {
			if spins >= 64 {
				runtime.Gosched()
			}
		}
	}
	ws.rows = nil
}

// split sets the parts of the current step: one per goroutine when the
// step has parallelMinRows rows or more.
func (ws *workspace) split() {
	ws.parts = 1
	if len(ws.rows) >= parallelMinRows {
		ws.parts = len(ws.helpers) + 1
	}
	splitRows(ws.bounds[:ws.parts+1], ws.rows)
}

// splitRows cuts rows into len(bounds)-1 parts, part p being rows
// bounds[p] ≤ r < bounds[p+1], of about equal cost (rowCostPositions plus
// the positions a row attends to each), cutting only between sequences (rows
// with different caches); a part may be empty.
func splitRows(bounds []int, rows []row) {
	parts, n := len(bounds)-1, len(rows)
	total := 0
	for _, rw := range rows {
		total += rowCostPositions + rw.pos + 1
	}
	bounds[0] = 0
	p, acc := 1, 0
	prevEnd, prevAcc := 0, 0 // the last place a cut may go, and the cost before it
	for r, rw := range rows {
		acc += rowCostPositions + rw.pos + 1
		if r+1 < n && rows[r+1].kv == rw.kv {
			continue // the next row is the same sequence's next position
		}
		for p < parts && acc*parts >= total*p {
			// Cut here or at the previous place, whichever is nearer the
			// target (costs scaled by parts).
			if prevEnd > bounds[p-1] && total*p-prevAcc*parts < acc*parts-total*p {
				bounds[p] = prevEnd
			} else {
				bounds[p] = r + 1
			}
			p++
		}
		prevEnd, prevAcc = r+1, acc
	}
	for ; p <= parts; p++ {
		bounds[p] = n
	}
}

// runPart runs the forward pass of part p's rows.
func (ws *workspace) runPart(p int) {
	lo, hi := ws.bounds[p], ws.bounds[p+1]
	if lo == hi {
		return
	}
	logitsBefore := 0
	for _, rw := range ws.rows[:lo] {
		if rw.logits {
			logitsBefore++
		}
	}
	ws.m.forwardRows(ws, p, lo, hi, logitsBefore)
}

// forwardRows is forward for rows lo..hi-1 of the step, using part p's
// scratch; their logits go to the packed logit rows from logitsBefore on.
func (m *model) forwardRows(ws *workspace, p, lo, hi, logitsBefore int) {
	c := m.cfg
	w := m.w
	rows := ws.rows[lo:hi]
	n := len(rows)
	dim, kvDim, hs, hidden := c.Dim, c.KVDim(), c.HeadSize(), c.HiddenDim
	half := hs / 2
	kvMul := c.NHeads / c.NKVHeads
	x, xb, xb2 := ws.x[lo*dim:hi*dim], ws.xb[lo*dim:hi*dim], ws.xb2[lo*dim:hi*dim]
	q, k, v := ws.q[lo*dim:hi*dim], ws.k[lo*kvDim:hi*kvDim], ws.v[lo*kvDim:hi*kvDim]
	hb, hb2 := ws.hb[lo*hidden:hi*hidden], ws.hb2[lo*hidden:hi*hidden]
	xt, att := ws.xt[p], ws.att[p]
	// Batches of wtMinRows rows or more take the transposed-weight kernel
	// where there is one; a lone row keeps run.c's scalar loop.
	wt := m.wt
	if n < wtMinRows {
		wt = nil
	}

	for r, rw := range rows {
		copy(x[r*dim:(r+1)*dim], w.tokenEmbedding[rw.token*dim:(rw.token+1)*dim])
	}
	for l := 0; l < c.NLayers; l++ {
		rmsnormRows(xb, x, w.rmsAtt[l*dim:(l+1)*dim], n, dim)
		if wt != nil {
			matmulWT(q, xb, layerOf(wt.wq, l, dim, dim), n, dim, dim)
			matmulWT(k, xb, layerOf(wt.wk, l, kvDim, dim), n, dim, kvDim)
			matmulWT(v, xb, layerOf(wt.wv, l, kvDim, dim), n, dim, kvDim)
		} else {
			prepareRows(xt, xb, n, dim)
			matmulPrepared(xt, q, xb, w.wq[l*dim*dim:(l+1)*dim*dim], n, dim, dim, 0, dim)
			matmulPrepared(xt, k, xb, w.wk[l*kvDim*dim:(l+1)*kvDim*dim], n, dim, kvDim, 0, kvDim)
			matmulPrepared(xt, v, xb, w.wv[l*kvDim*dim:(l+1)*kvDim*dim], n, dim, kvDim, 0, kvDim)
		}
		for r, rw := range rows {
			cos := m.ropeCos[rw.pos*half : (rw.pos+1)*half]
			sin := m.ropeSin[rw.pos*half : (rw.pos+1)*half]
			rope(q[r*dim:(r+1)*dim], cos, sin, hs)
			rope(k[r*kvDim:(r+1)*kvDim], cos, sin, hs)
			off := (l*rw.kv.capacity + rw.pos) * kvDim
			copy(rw.kv.v[off:off+kvDim], v[r*kvDim:(r+1)*kvDim])
			kt := rw.kv.layerKeys(l, kvDim)[keyAt(kvDim, 0, rw.pos):]
			for i, val := range k[r*kvDim : (r+1)*kvDim] {
				kt[i*keyTile] = val
			}
		}
		for r, rw := range rows {
			m.attention(xb[r*dim:(r+1)*dim], q[r*dim:(r+1)*dim], rw, l, att, kvMul)
		}
		if wt != nil {
			matmulWT(xb2, xb, layerOf(wt.wo, l, dim, dim), n, dim, dim)
		} else {
			matmulRows(xt, xb2, xb, w.wo[l*dim*dim:(l+1)*dim*dim], n, dim, dim, 0, dim)
		}
		addInPlace(x, xb2)
		rmsnormRows(xb, x, w.rmsFFN[l*dim:(l+1)*dim], n, dim)
		// silu(w1·x) * (w3·x)
		if wt != nil {
			matmulWT(hb, xb, layerOf(wt.w1, l, hidden, dim), n, dim, hidden)
			matmulWT(hb2, xb, layerOf(wt.w3, l, hidden, dim), n, dim, hidden)
			swigluFast(hb, hb2)
			matmulWT(xb, hb, layerOf(wt.w2, l, dim, hidden), n, hidden, dim)
		} else {
			prepareRows(xt, xb, n, dim)
			matmulPrepared(xt, hb, xb, w.w1[l*hidden*dim:(l+1)*hidden*dim], n, dim, hidden, 0, hidden)
			matmulPrepared(xt, hb2, xb, w.w3[l*hidden*dim:(l+1)*hidden*dim], n, dim, hidden, 0, hidden)
			swigluFast(hb, hb2)
			matmulRows(xt, xb, hb, w.w2[l*dim*hidden:(l+1)*dim*hidden], n, hidden, dim, 0, dim)
		}
		addInPlace(x, xb)
	}
	rmsnormRows(x, x, w.rmsFinal, n, dim)

	nl := 0
	xl := ws.xl[logitsBefore*dim:]
	for r, rw := range rows {
		if rw.logits {
			copy(xl[nl*dim:(nl+1)*dim], x[r*dim:(r+1)*dim])
			nl++
		}
	}
	if nl >= wtMinRows && m.wt != nil {
		matmulWT(ws.logits[logitsBefore*c.VocabSize:], xl[:nl*dim], m.wt.wcls, nl, dim, c.VocabSize)
	} else if nl > 0 {
		matmulRows(xt, ws.logits[logitsBefore*c.VocabSize:], xl[:nl*dim], w.wcls, nl, dim, c.VocabSize, 0, c.VocabSize)
	}
	li := logitsBefore
	for r, rw := range rows {
		if !rw.logits {
			continue
		}
		if rw.smp != nil {
			ws.tokens[lo+r] = rw.smp.sample(ws.logits[li*c.VocabSize : (li+1)*c.VocabSize])
		}
		li++
	}
}

// attention computes one row's multi-head attention output into out, as
// run.c: scores q·k / sqrt(head_size) over positions 0..pos, softmax, then
// the weighted sum of values, each in position order. att has room for
// NHeads*(pos+1) scores. Heads of a multiple of eight dimensions take an
// unrolled path with the same summation order, and heads of eight a vector
// path where the build and CPU have one (attentionVec).
func (m *model) attention(out, q []float32, rw row, layer int, att []float32, kvMul int) {
	if !m.attentionVec(out, q, rw, layer, att, kvMul) {
		m.attentionScalar(out, q, rw, layer, att, kvMul)
	}
}

// attentionScalar is attention without vector instructions.
func (m *model) attentionScalar(out, q []float32, rw row, layer int, att []float32, kvMul int) {
	c := m.cfg
	hs, kvDim, capacity := c.HeadSize(), c.KVDim(), rw.kv.capacity
	kt := rw.kv.layerKeys(layer, kvDim)
	vc := rw.kv.v[layer*capacity*kvDim : layer*capacity*kvDim+(rw.pos+1)*kvDim]
	att = att[:rw.pos+1]
	for h := 0; h < c.NHeads; h++ {
		qh := q[h*hs : (h+1)*hs]
		ko := (h / kvMul) * hs
		xh := out[h*hs : (h+1)*hs]
		if hs%8 == 0 {
			softmaxFrom(att, scores8(att, qh, kt, kvDim, ko, m.attScale))
			weightedSum8(xh, att, vc, ko, kvDim)
			continue
		}
		for t := range att {
			var score float32
			for i, qv := range qh {
				score += float32(qv * kt[keyAt(kvDim, ko+i, t)])
			}
			att[t] = score / m.attScale
		}
		softmax(att)
		clear(xh)
		for t, a := range att {
			vt := vc[t*kvDim+ko : t*kvDim+ko+hs]
			vt = vt[:len(xh)]
			for i := range xh {
				xh[i] += float32(a * vt[i])
			}
		}
	}
}

// scores8 sets att[t] = (q·k_t)/scale for a head of a multiple of 8 dims
// whose first dimension is ko, reading the layer's tiled keys kt (see
// kvCache), and returns the largest score.
func scores8(att, q, kt []float32, kvDim, ko int, scale float32) float32 {
	maxVal := float32(math.Inf(-1))
	inv := 1 / float64(scale)
	for t0 := 0; t0 < len(att); t0 += keyTile {
		tile := kt[keyAt(kvDim, ko, t0):]
		a := att[t0:min(t0+keyTile, len(att))]
		n := len(a)
		for i0 := 0; i0+8 <= len(q); i0 += 8 {
			q0, q1, q2, q3, q4, q5, q6, q7 := q[i0], q[i0+1], q[i0+2], q[i0+3], q[i0+4], q[i0+5], q[i0+6], q[i0+7]
			k0 := tile[i0*keyTile : i0*keyTile+n]
			k1 := tile[(i0+1)*keyTile : (i0+1)*keyTile+n]
			k2 := tile[(i0+2)*keyTile : (i0+2)*keyTile+n]
			k3 := tile[(i0+3)*keyTile : (i0+3)*keyTile+n]
			k4 := tile[(i0+4)*keyTile : (i0+4)*keyTile+n]
			k5 := tile[(i0+5)*keyTile : (i0+5)*keyTile+n]
			k6 := tile[(i0+6)*keyTile : (i0+6)*keyTile+n]
			k7 := tile[(i0+7)*keyTile : (i0+7)*keyTile+n]
			last := i0+8 == len(q)
			for t := range a {
				var s float32
				if i0 > 0 {
					s = a[t] // the partial sum of the earlier dimensions
				}
				s += float32(q0 * k0[t])
				s += float32(q1 * k1[t])
				s += float32(q2 * k2[t])
				s += float32(q3 * k3[t])
				s += float32(q4 * k4[t])
				s += float32(q5 * k5[t])
				s += float32(q6 * k6[t])
				s += float32(q7 * k7[t])
				if last {
					s = divf(s, inv)
					if s > maxVal {
						maxVal = s
					}
				}
				a[t] = s
			}
		}
	}
	return maxVal
}

// weightedSum8 sets out = Σ_t att[t]·v_t for a head of a multiple of 8
// dims, four dimensions per pass kept in registers (wider passes spill),
// each summed in t order.
func weightedSum8(out, att, vc []float32, vo, stride int) {
	for i := 0; i+4 <= len(out); i += 4 {
		var x0, x1, x2, x3 float32
		off := vo + i
		for _, a := range att {
			v := vc[off : off+4 : off+4]
			x0 += float32(a * v[0])
			x1 += float32(a * v[1])
			x2 += float32(a * v[2])
			x3 += float32(a * v[3])
			off += stride
		}
		o := out[i : i+4 : i+4]
		o[0], o[1], o[2], o[3] = x0, x1, x2, x3
	}
}

// rope rotates each head's position pairs of vec in place.
func rope(vec, cos, sin []float32, hs int) {
	for h := 0; h+hs <= len(vec); h += hs {
		v := vec[h : h+hs]
		for i := range cos {
			fcr, fci := cos[i], sin[i]
			v0, v1 := v[2*i], v[2*i+1]
			v[2*i] = float32(v0*fcr) - float32(v1*fci)
			v[2*i+1] = float32(v0*fci) + float32(v1*fcr)
		}
	}
}

// rmsnormRows normalizes each of n rows of x into o (which may be x).
func rmsnormRows(o, x, weight []float32, n, dim int) {
	for r := 0; r < n; r++ {
		xr := x[r*dim : (r+1)*dim]
		or := o[r*dim : (r+1)*dim]
		weight = weight[:len(xr)]
		or = or[:len(xr)]
		var ss float32
		for _, v := range xr {
			ss += float32(v * v)
		}
		ss /= float32(dim)
		ss += 1e-5
		ss = 1 / sqrtf(ss)
		for j, v := range xr {
			or[j] = weight[j] * float32(ss*v)
		}
	}
}

// softmax normalizes x in place as run.c does.
func softmax(x []float32) {
	maxVal := x[0]
	for _, v := range x[1:] {
		if v > maxVal {
			maxVal = v
		}
	}
	softmaxFrom(x, maxVal)
}

// softmaxFrom is softmax given the largest element of x.
func softmaxFrom(x []float32, maxVal float32) {
	var sum float32
	for i, v := range x {
		d := v - maxVal // ≤ 0 unless NaN
		var e float32
		if d >= -103.97208 {
			e = expfReduced(d)
		} else {
			e = expf(d)
		}
		x[i] = e
		sum += e
	}
	inv := 1 / float64(sum)
	for i := range x {
		x[i] = divf(x[i], inv)
	}
}

// swiglu sets hb = silu(hb) * hb2 elementwise.
func swiglu(hb, hb2 []float32) {
	hb2 = hb2[:len(hb)]
	for i, val := range hb {
		var e float32
		if m := -val; m >= -103.97208 && m <= 88.72284 {
			e = expfReduced(m)
		} else {
			e = expf(m)
		}
		val *= 1 / (1 + e)
		val *= hb2[i]
		hb[i] = val
	}
}

func addInPlace(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}
