package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

var errEventTooLarge = errors.New("stream event too large")

// sseBufferSize is the pooled reader's buffer: one common event fits; a
// longer line is assembled from several reads, up to the event bound.
const sseBufferSize = 4 << 10

var sseReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, sseBufferSize) }}

// sseReader reads the data of server-sent events, bounded in size. Comment
// lines (": keepalive") and the id/retry fields are skipped; several data
// lines of one event are joined with "\n" as the SSE spec says. An event
// named "error" (`event: error`) and an "error" field (llama.cpp's
// `error: {...}` line, which carries its error object) mark the event as
// an error report: see failed. Call release when done with it.
type sseReader struct {
	r      *bufio.Reader
	max    int
	onLine func() // called for every line read, keepalives included
	line   []byte // a line longer than the buffer, assembled
	data   []byte
	eof    bool
	isErr  bool // the event next returned reports an error
}

func newSSEReader(r io.Reader, max int, onLine func()) *sseReader {
	br := sseReaderPool.Get().(*bufio.Reader)
	br.Reset(r)
	if onLine == nil {
		onLine = func() {}
	}
	return &sseReader{r: br, max: max, onLine: onLine}
}

// release returns the reader's buffer to the pool; r is unusable after.
func (r *sseReader) release() {
	if r.r != nil {
		r.r.Reset(nil)
		sseReaderPool.Put(r.r)
		r.r = nil
	}
}

// eventBuffered reports whether a whole further event (a blank line ends
// one) has been received already and waits in the buffer.
func (r *sseReader) eventBuffered() bool {
	n := r.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.r.Peek(n)
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// readLine returns the next line without its line ending, valid until the
// next call; io.EOF once the input is exhausted. A last line without a
// line ending still counts.
func (r *sseReader) readLine() ([]byte, error) {
	if r.eof {
		return nil, io.EOF
	}
	chunk, err := r.r.ReadSlice('\n')
	line := chunk
	if err != nil {
		line = append(r.line[:0], chunk...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > r.max {
				return nil, fmt.Errorf("%w: line over %d bytes", errEventTooLarge, r.max)
			}
			chunk, err = r.r.ReadSlice('\n')
			line = append(line, chunk...)
		}
		r.line = line
		switch {
		case err == io.EOF && len(line) > 0:
			r.eof = true
		case err != nil:
			return nil, err
		}
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > r.max {
		return nil, fmt.Errorf("%w: line over %d bytes", errEventTooLarge, r.max)
	}
	return line, nil
}

// failed reports whether the event next last returned reports an error
// (`event: error`, or an `error:` field whose value is then its data).
func (r *sseReader) failed() bool { return r.isErr }

// next returns the next event's data, valid until the following call, or
// io.EOF when the stream ends cleanly.
func (r *sseReader) next() ([]byte, error) {
	r.data = r.data[:0]
	r.isErr = false
	has := false
	for {
		line, err := r.readLine()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		r.onLine()
		if len(line) == 0 {
			if has {
				return r.data, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
		case "event":
			r.isErr = r.isErr || string(value) == "error"
			continue
		case "error":
			// llama.cpp: the error object is this field's value. It
			// replaces whatever data the event had.
			r.isErr, has, r.data = true, false, r.data[:0]
		default:
			continue
		}
		if has {
			r.data = append(r.data, '\n')
		}
		if len(r.data)+len(value) > r.max {
			return nil, fmt.Errorf("%w: over %d bytes", errEventTooLarge, r.max)
		}
		r.data = append(r.data, value...)
		has = true
	}
	if has {
		return r.data, nil
	}
	return nil, io.EOF
}
