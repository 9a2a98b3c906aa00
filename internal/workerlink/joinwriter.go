package workerlink

import (
	"encoding/binary"
	"net"
)

// joinedWriter writes each yamux data frame's header and body in one Write.
// yamux (v0.1.2) sends a frame as two Writes, the 12-byte header and then
// the body; over TLS each Write is a record and a syscall of its own, so
// every data frame cost two of each, and the peer woke twice to read it.
// A data frame's header with a non-empty body is held and written in front
// of the next Write (its body), so the bytes on the wire are exactly
// yamux's, in the same order; only their grouping changes. yamux has one
// writer (the session's send loop), so no lock is needed.
type joinedWriter struct {
	net.Conn
	hdr  [frameHeaderSize]byte
	held bool
	buf  []byte
}

func newJoinedWriter(c net.Conn) *joinedWriter { return &joinedWriter{Conn: c} }

func (j *joinedWriter) Write(p []byte) (int, error) {
	if j.held {
		j.held = false
		j.buf = append(append(j.buf[:0], j.hdr[:]...), p...)
		if len(j.buf) > maxJoinedBuffer {
			defer func() { j.buf = nil }() // a big body once keeps no big buffer
		}
		if _, err := j.Conn.Write(j.buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if len(p) == frameHeaderSize && p[1] == frameTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(j.hdr[:], p)
		j.held = true
		return len(p), nil
	}
	return j.Conn.Write(p)
}

// maxJoinedBuffer is the largest buffer a joinedWriter keeps between
// frames (a stream's window is 256 KiB; most frames are far smaller).
const maxJoinedBuffer = 64 << 10
