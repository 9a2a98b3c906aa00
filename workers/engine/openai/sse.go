package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

var errEventTooLarge = errors.New("stream event too large")

// sseReader reads the data of server-sent events, bounded in size. Comment
// lines (": keepalive") and the event/id/retry fields are skipped; several
// data lines of one event are joined with "\n" as the SSE spec says.
type sseReader struct {
	sc     *bufio.Scanner
	max    int
	onLine func() // called for every line read, keepalives included
	data   []byte
}

func newSSEReader(r io.Reader, max int, onLine func()) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(max, 64<<10)), max)
	if onLine == nil {
		onLine = func() {}
	}
	return &sseReader{sc: sc, max: max, onLine: onLine}
}

// next returns the next event's data, valid until the following call, or
// io.EOF when the stream ends cleanly.
func (r *sseReader) next() ([]byte, error) {
	r.data = r.data[:0]
	has := false
	for r.sc.Scan() {
		r.onLine()
		line := r.sc.Bytes()
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
		if string(field) != "data" {
			continue
		}
		value = bytes.TrimPrefix(value, []byte(" "))
		if has {
			r.data = append(r.data, '\n')
		}
		if len(r.data)+len(value) > r.max {
			return nil, fmt.Errorf("%w: over %d bytes", errEventTooLarge, r.max)
		}
		r.data = append(r.data, value...)
		has = true
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line over %d bytes", errEventTooLarge, r.max)
		}
		return nil, err
	}
	if has {
		return r.data, nil
	}
	return nil, io.EOF
}
