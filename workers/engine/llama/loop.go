package llama

import (
	"math"
	"sync/atomic"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// sequence is one request inside the batching loop. The fields above the
// line are set before it is queued and never change; the loop owns the rest.
type sequence struct {
	requestID string
	prompt    []int
	embed     bool // embedding: run the prompt, return the pooled hidden state
	maxNew    int  // tokens to generate at most (already capped by the context)
	capacity  int  // positions it will run, reserved in the KV budget
	kvBytes   int64
	sampler   *sampler
	// out carries tokens and the final event to the request's goroutine. It
	// is buffered for every event the sequence can produce, so the loop never
	// waits on a slow client.
	out       chan seqEvent
	cancelled atomic.Bool
	// ----
	kv        *kvCache
	fed       int // positions run so far
	last      int // last generated token, fed at the next step
	generated int
	hidden    []float64 // embedding: sum of final hidden states
	pooled    int       // embedding: positions summed
}

// seqEvent is a generated token, or the end of the sequence.
type seqEvent struct {
	token   int
	finish  string    // "stop" or "length" when the sequence ended
	pooled  []float32 // embedding: the unit-normalized mean hidden state
	err     error     // the engine shut down
	isFinal bool
}

// signal wakes the loop without blocking.
func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// loop is the continuous-batching scheduler: each iteration admits queued
// sequences that fit (max-num-seqs and the KV budget), drops cancelled ones,
// runs ONE batched forward step for every running sequence (decoding
// sequences one row each, prefilling ones as many prompt positions as the
// step's row budget allows) and hands out the sampled tokens. Sequences join
// and leave between any two steps.
func (e *Engine) loop() {
	defer close(e.done)
	var running []*sequence
	rows := make([]row, 0, e.ws.maxRows)
	rowSeq := make([]*sequence, 0, e.ws.maxRows)
	for {
		e.mu.Lock()
		running = e.admitLocked(running)
		closed := e.closed
		e.mu.Unlock()
		if closed {
			e.failAll(running)
			return
		}
		if len(running) == 0 {
			select {
			case <-e.wake:
			case <-e.quit:
			}
			continue
		}
		if e.hook != nil {
			e.hook()
		}
		rows, rowSeq = e.planStep(running, rows[:0], rowSeq[:0])
		e.model.forward(e.ws, rows)
		running = e.finishStep(running, rows, rowSeq)
		e.steps.Add(1)
	}
}

// admitLocked drops cancelled sequences and moves queued ones into the
// running set while they fit. The queue is FIFO: a large request at its
// head waits for room rather than being overtaken forever.
func (e *Engine) admitLocked(running []*sequence) []*sequence {
	kept := running[:0]
	for _, s := range running {
		if s.cancelled.Load() {
			e.releaseLocked(s)
			continue
		}
		kept = append(kept, s)
	}
	clear(running[len(kept):])
	running = kept
	for len(e.waiting) > 0 && len(running) < e.opts.MaxNumSeqs {
		s := e.waiting[0]
		if s.cancelled.Load() {
			e.waiting = e.waiting[1:]
			continue
		}
		if e.kvUsed+s.kvBytes > e.opts.KVCacheBytes {
			break
		}
		e.waiting[0] = nil
		e.waiting = e.waiting[1:]
		e.kvUsed += s.kvBytes
		running = append(running, s)
		e.logger.Debug("sequence joined the batch", "request_id", s.requestID, "prompt_tokens", len(s.prompt),
			"reserved_positions", s.capacity, "running", len(running), "waiting", len(e.waiting))
	}
	e.nRunning.Store(int64(len(running)))
	return running
}

func (e *Engine) releaseLocked(s *sequence) {
	e.kvUsed -= s.kvBytes
	s.kv = nil
}

// planStep lays out this step's rows: one per running sequence, plus extra
// prompt positions for prefilling sequences while the row budget lasts.
func (e *Engine) planStep(running []*sequence, rows []row, rowSeq []*sequence) ([]row, []*sequence) {
	spare := e.ws.maxRows - len(running)
	for _, s := range running {
		if s.kv == nil {
			s.kv = e.model.newKVCache(s.capacity)
		}
		n := 1
		if left := len(s.prompt) - s.fed; left > 1 && spare > 0 {
			extra := min(left-1, spare)
			n += extra
			spare -= extra
		}
		for i := 0; i < n; i++ {
			pos := s.fed + i
			tok := s.last
			if pos < len(s.prompt) {
				tok = s.prompt[pos]
			}
			rw := row{token: tok, pos: pos, kv: s.kv,
				logits: !s.embed && i == n-1 && pos >= len(s.prompt)-1}
			if rw.logits {
				rw.smp = s.sampler
			}
			rows = append(rows, rw)
			rowSeq = append(rowSeq, s)
		}
	}
	return rows, rowSeq
}

// finishStep takes the tokens the forward pass sampled, pools embedding
// rows and retires sequences that ended.
func (e *Engine) finishStep(running []*sequence, rows []row, rowSeq []*sequence) []*sequence {
	c := e.model.cfg
	for r, rw := range rows {
		s := rowSeq[r]
		s.fed = rw.pos + 1
		if s.embed {
			if rw.pos > 0 || len(s.prompt) == 1 { // BOS is pooled only when it is all there is
				x := e.ws.x[r*c.Dim : (r+1)*c.Dim]
				for i, v := range x {
					s.hidden[i] += float64(v)
				}
				s.pooled++
			}
			continue
		}
		if !rw.logits {
			continue
		}
		tok := e.ws.tokens[r] // sampled by the forward pass (row.smp)
		if tok == tokenBOS || tok == tokenEOS {
			s.out <- seqEvent{finish: "stop", isFinal: true}
			s.cancelled.Store(true)
			continue
		}
		s.generated++
		s.last = tok
		s.out <- seqEvent{token: tok}
		if con := s.sampler.con; con != nil && (con.done || s.generated >= s.maxNew && con.state.Complete()) {
			s.out <- seqEvent{finish: "stop", isFinal: true} // the document is closed
			s.cancelled.Store(true)
			continue
		}
		if s.generated >= s.maxNew {
			s.out <- seqEvent{finish: "length", isFinal: true}
			s.cancelled.Store(true)
		}
	}
	for _, s := range running {
		if s.embed && !s.cancelled.Load() && s.fed == len(s.prompt) {
			s.out <- seqEvent{pooled: poolHidden(s.hidden, s.pooled), isFinal: true}
			s.cancelled.Store(true)
		}
	}
	return running
}

// poolHidden is the mean of the summed hidden states, scaled to unit length.
func poolHidden(sum []float64, n int) []float32 {
	var norm float64
	for _, v := range sum {
		m := v / float64(n)
		norm += m * m
	}
	out := make([]float32, len(sum))
	if norm == 0 {
		return out
	}
	scale := 1 / (float64(n) * math.Sqrt(norm))
	for i, v := range sum {
		out[i] = float32(v * scale)
	}
	return out
}

// failAll ends every running and queued sequence because the engine closed.
func (e *Engine) failAll(running []*sequence) {
	err := apierr.Unavailable("engine_closed", "the model engine is shutting down", nil)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range running {
		e.releaseLocked(s)
		s.out <- seqEvent{err: err, isFinal: true}
	}
	for _, s := range e.waiting {
		s.out <- seqEvent{err: err, isFinal: true}
	}
	e.waiting = nil
	e.nRunning.Store(0)
}
