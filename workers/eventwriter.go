package workers

import (
	"errors"
	"net/http"
	"sync"
)

// maxPendingEventBytes bounds the events encoded but not yet written: a
// gateway that reads slower than the batch produces makes emit wait
// (backpressure) instead of the worker buffering without limit.
const maxPendingEventBytes = 1 << 20

var errEventWriterClosed = errors.New("event stream closed")

// eventBufPool recycles the encode buffers of event streams.
var eventBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// eventWriter streams a batch's events to the gateway. emit only encodes an
// event into a buffer; one goroutine writes and flushes whatever has
// accumulated, so events that arrive while a write is in flight go out
// together in the next one. A stream is therefore flushed as soon as no
// further event is ready (a token is never held back waiting for company),
// yet a busy batch costs one write per burst, not one per token.
type eventWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	onFail  func() // called once when a write fails (the gateway is gone)

	mu      sync.Mutex
	cond    sync.Cond // signalled when pending is taken or the writer stops
	pending *[]byte
	spare   *[]byte
	started bool // the status line is committed (first event emitted)
	closing bool
	err     error

	wake chan struct{}
	done chan struct{}
}

func newEventWriter(w http.ResponseWriter, onFail func()) *eventWriter {
	ew := &eventWriter{
		w:       w,
		onFail:  onFail,
		pending: eventBufPool.Get().(*[]byte),
		spare:   eventBufPool.Get().(*[]byte),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	ew.flusher, _ = w.(http.Flusher)
	ew.cond.L = &ew.mu
	go ew.loop()
	return ew
}

// emit queues ev for writing. It fails once a write has failed.
func (ew *eventWriter) emit(ev Event) error {
	ew.mu.Lock()
	if ew.err != nil {
		err := ew.err
		ew.mu.Unlock()
		return err
	}
	b, err := appendEvent(*ew.pending, &ev)
	if err != nil {
		ew.mu.Unlock()
		return err
	}
	*ew.pending = b
	ew.started = true
	for len(*ew.pending) > maxPendingEventBytes && ew.err == nil {
		ew.signal()
		ew.cond.Wait()
	}
	err = ew.err
	ew.mu.Unlock()
	ew.signal()
	return err
}

// hasStarted reports whether any event was emitted (and so the 200 status
// is, or is about to be, on the wire).
func (ew *eventWriter) hasStarted() bool {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	return ew.started
}

func (ew *eventWriter) signal() {
	select {
	case ew.wake <- struct{}{}:
	default:
	}
}

// close writes what is still pending, stops the writer goroutine and
// returns the first write error. The ResponseWriter is the caller's again
// afterwards.
func (ew *eventWriter) close() error {
	ew.mu.Lock()
	ew.closing = true
	ew.mu.Unlock()
	ew.signal()
	<-ew.done
	ew.mu.Lock()
	defer ew.mu.Unlock()
	for _, b := range []*[]byte{ew.pending, ew.spare} {
		if cap(*b) <= 64<<10 {
			*b = (*b)[:0]
			eventBufPool.Put(b)
		}
	}
	ew.pending, ew.spare = nil, nil
	return ew.err
}

func (ew *eventWriter) loop() {
	defer close(ew.done)
	headerSent := false
	for range ew.wake {
		for {
			ew.mu.Lock()
			buf := ew.pending
			if len(*buf) == 0 || ew.err != nil {
				closing := ew.closing
				ew.mu.Unlock()
				if closing {
					return
				}
				break
			}
			ew.pending, ew.spare = ew.spare, buf
			ew.mu.Unlock()

			if !headerSent {
				h := ew.w.Header()
				h.Set("Content-Type", ContentTypeNDJSON)
				h.Set("Cache-Control", "no-store")
				ew.w.WriteHeader(http.StatusOK)
				headerSent = true
			}
			_, err := ew.w.Write(*buf)
			if err == nil && ew.flusher != nil {
				// net/http's Flush reports no error; a broken connection
				// shows on the next Write or through the request context.
				ew.flusher.Flush()
			}
			ew.mu.Lock()
			*buf = (*buf)[:0]
			failed := err != nil && ew.err == nil
			if failed {
				ew.err = err
			}
			ew.cond.Broadcast()
			ew.mu.Unlock()
			if failed && ew.onFail != nil {
				ew.onFail()
			}
		}
	}
}
