package workers

import (
	"errors"
	"net/http"
	"sync"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// maxPendingEventBytes bounds the events encoded but not yet written: a
// gateway that reads slower than the batch produces makes emit wait
// (backpressure) instead of the worker buffering without limit.
const maxPendingEventBytes = 1 << 20

var errEventWriterClosed = errors.New("event stream closed")

// eventBufPool recycles the encode buffers of event streams.
var eventBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// eventWriter streams a batch's events to the gateway. emit encodes an
// event into a buffer; if no write is in flight, the emitting goroutine
// then writes whatever has accumulated itself, and events emitted meanwhile
// by the batch's other tasks go out together in its next write. No
// goroutine is handed the write (a hand-off is a thread wake-up, and on a
// loaded host those are what tail latency is made of).
//
// When to write and flush:
//   - an event: at once (a token is never held back waiting for company,
//     yet a busy batch costs one write per burst, not one per token),
//     unless it is marked More — what follows it is already at hand (the
//     engine's next delta, or an unstreamed task's done event after its
//     text), and the two go out in one write (the client still gets every
//     event);
//   - the batch's last ending event: written but not flushed — the
//     handler returns next, and net/http sends it together with the end of
//     the response. A one-task unstreamed batch is one write on the wire.
type eventWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	open    int // tasks not yet ended (done or failed emitted)

	mu         sync.Mutex
	cond       sync.Cond // signalled when a write ends
	pending    *[]byte
	spare      *[]byte
	writing    bool // a goroutine is writing; it takes pending before it stops
	started    bool // the status line is committed (first event emitted)
	headerSent bool // touched only by the writing goroutine
	err        error
}

// newEventWriter writes the events of a batch of tasks tasks to w. A write
// that fails (the gateway is gone) is returned to the emitting task, and
// RunBatch then cancels the whole batch.
func newEventWriter(w http.ResponseWriter, tasks int) *eventWriter {
	ew := &eventWriter{
		w:       w,
		open:    tasks,
		pending: eventBufPool.Get().(*[]byte),
		spare:   eventBufPool.Get().(*[]byte),
	}
	ew.flusher, _ = w.(http.Flusher)
	ew.cond.L = &ew.mu
	return ew
}

// emit queues ev and, unless another goroutine is writing already, writes
// everything queued. It fails once a write has failed. While a write is in
// flight and more than maxPendingEventBytes wait, emit waits (backpressure).
func (ew *eventWriter) emit(ev task.Event) error {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	if ew.err != nil {
		return ew.err
	}
	b, err := appendEvent(*ew.pending, &ev)
	if err != nil {
		return err
	}
	*ew.pending = b
	ew.started = true
	switch {
	case ev.Type == task.EventDone || ev.Type == task.EventFailed:
		ew.open--
	case ev.More && len(*ew.pending) <= maxPendingEventBytes:
		return nil // held: what follows is at hand
	}
	if ew.writing {
		for ew.writing && len(*ew.pending) > maxPendingEventBytes && ew.err == nil {
			ew.cond.Wait()
		}
		if ew.writing || ew.err != nil {
			return ew.err
		}
		if len(*ew.pending) == 0 {
			return nil // the writer took it
		}
	}
	ew.writing = true
	for len(*ew.pending) > 0 && ew.err == nil {
		buf := ew.pending
		ew.pending, ew.spare = ew.spare, buf
		flush := ew.open > 0 // else the handler's return flushes
		ew.mu.Unlock()
		err := ew.write(*buf, flush)
		ew.mu.Lock()
		*buf = (*buf)[:0]
		if err != nil && ew.err == nil {
			ew.err = err
		}
		ew.cond.Broadcast()
	}
	ew.writing = false
	ew.cond.Broadcast()
	return ew.err
}

// write sends one burst of encoded events, the status line first.
func (ew *eventWriter) write(b []byte, flush bool) error {
	if !ew.headerSent {
		h := ew.w.Header()
		h.Set("Content-Type", ContentTypeNDJSON)
		h.Set("Cache-Control", "no-store")
		ew.w.WriteHeader(http.StatusOK)
		ew.headerSent = true
	}
	_, err := ew.w.Write(b)
	if err == nil && flush && ew.flusher != nil {
		// net/http's Flush reports no error; a broken connection shows on
		// the next Write or through the request context.
		ew.flusher.Flush()
	}
	return err
}

// hasStarted reports whether any event was emitted (and so the 200 status
// is, or is about to be, on the wire).
func (ew *eventWriter) hasStarted() bool {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	return ew.started
}

// close waits for a write in flight, releases the buffers and returns the
// first write error. The ResponseWriter is the caller's again afterwards.
func (ew *eventWriter) close() error {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	for ew.writing {
		ew.cond.Wait()
	}
	if len(*ew.pending) > 0 && ew.err == nil {
		// Held text whose task never ended (the batch stopped early).
		if err := ew.write(*ew.pending, false); err != nil {
			ew.err = err
		}
	}
	for _, b := range []*[]byte{ew.pending, ew.spare} {
		if b != nil && cap(*b) <= 64<<10 {
			*b = (*b)[:0]
			eventBufPool.Put(b)
		}
	}
	ew.pending, ew.spare = nil, nil
	if ew.err == nil {
		ew.err = errEventWriterClosed
		return nil
	}
	return ew.err
}
