// Package httpguard refuses ambiguous HTTP/1.1 request framing before the
// HTTP server parses it, so that no two parsers (a front proxy's and ours)
// can disagree about where one request ends and the next begins.
//
// It wraps a net.Listener; each accepted connection scans the requests
// flowing through Read, in order, with a small state machine: a request's
// header block is held back until it is complete and checked, then handed
// to the server unchanged; a body is counted (Content-Length) or walked
// (chunked: sizes, data, trailers) and, when nothing is buffered, read
// straight into the server's buffer, so bodies are never copied by the
// guard. Pipelining and keep-alive work as before.
//
// A request is refused (an *Error from Read, which the server answers with
// 400 and a closed connection) when its header block has:
//   - both Content-Length and Transfer-Encoding, or either twice;
//   - a Transfer-Encoding other than exactly "chunked" (any case, optional
//     whitespace around it), or one on an HTTP/1.0 request;
//   - a Content-Length that is not plain digits;
//   - a folded line (obs-fold: a line starting with space or tab);
//   - a field name that is not a token (a space or tab before the colon,
//     any other non-tchar), or an empty one;
//   - a bare CR or bare LF, a NUL or other control byte in a value;
//   - a request line other than METHOD SP target SP HTTP/1.0|HTTP/1.1;
//   - more than Limits.MaxHeaderBytes bytes (431);
//
// or when its chunked body has a malformed size line, extension, data
// terminator or trailer (a trailer may not carry framing fields).
//
// Before the error, the guard hands out the first byte of the refused
// request, so that the server sees a started request and answers it rather
// than closing silently as it does for a connection that sent nothing.
package httpguard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxHeaderBytes bounds one header block (request line and fields)
// and one chunked trailer block.
const DefaultMaxHeaderBytes = 64 << 10

// maxLine bounds a chunk-size line (size and extensions).
const maxLine = 4 << 10

// Limits bound what one connection may hold back.
type Limits struct {
	// MaxHeaderBytes bounds a header block; larger is refused with 431.
	// Default DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

// Error is why a request was refused. The server's transport error
// handler can find it with errors.As and answer Status.
type Error struct {
	Status int    // 400, or 431 for an oversized header block
	Reason string // what was wrong, for the client and the log (no header values)
}

func (e *Error) Error() string { return "httpguard: " + e.Reason }

func refuse(format string, args ...any) *Error {
	return &Error{Status: 400, Reason: fmt.Sprintf(format, args...)}
}

// Listener wraps ln so every accepted connection is guarded.
func Listener(ln net.Listener, lim Limits) net.Listener {
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &listener{Listener: ln, lim: lim}
}

type listener struct {
	net.Listener
	lim Limits
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.lim), nil
}

// NewConn guards one connection (Listener does this for each it accepts).
func NewConn(c net.Conn, lim Limits) net.Conn {
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &Conn{Conn: c, maxHeader: lim.MaxHeaderBytes}
}

// Unwrap returns the connection under a guarded one (or c itself).
func Unwrap(c net.Conn) net.Conn {
	if g, ok := c.(*Conn); ok {
		return g.Conn
	}
	return c
}

// state is where the scanner is in the request stream.
type state uint8

const (
	stHeader    state = iota // in a header block (or before one)
	stBody                   // Content-Length body: remaining bytes
	stChunkSize              // expecting a chunk-size line
	stChunkData              // chunk data: remaining bytes
	stChunkEnd               // expecting the CRLF after chunk data
	stTrailer                // in the trailer block after the last chunk
)

// Conn is a guarded connection. Its Read hands out only checked bytes.
type Conn struct {
	net.Conn
	maxHeader int

	// buf[off:scan] is checked and may be handed out; buf[scan:end] is
	// read but not yet checked. buf is pooled while empty.
	buf            []byte
	pooled         *[]byte // buf's pool entry, nil when buf was grown
	off, scan, end int

	st        state
	remaining int64 // stBody, stChunkData: bytes left
	// A header or trailer block is checked line by line from scan+pos;
	// the block itself starts at scan (it is held back until complete).
	pos   int
	block blockState

	refused *Error // sticky: every Read after the hand-out returns it
	readErr error  // the underlying Read's error, returned once the buffer is drained

	// mid is midRequest as of the end of the last Read, for Close, which
	// may run on another goroutine (a server's shutdown closing idle
	// connections while their Read waits).
	mid       atomic.Bool
	lingering atomic.Bool // a lingering close is under way: later Closes are no-ops
}

// blockState is what one header block has shown so far.
type blockState struct {
	started       bool // the request line has been seen
	http10        bool
	contentLength int64
	sawCL, sawTE  bool
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.read(p)
	c.mid.Store(c.midRequest())
	return n, err
}

func (c *Conn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.off < c.scan {
			n := copy(p, c.buf[c.off:c.scan])
			c.off += n
			c.release()
			return n, nil
		}
		if c.refused != nil {
			return 0, c.refused
		}
		if c.scan < c.end {
			if c.step() {
				continue
			}
			if c.refused != nil {
				continue
			}
		} else if c.readErr == nil && (c.st == stBody || c.st == stChunkData) && c.remaining > 0 {
			// Nothing buffered: the body goes straight to the caller.
			if int64(len(p)) > c.remaining {
				p = p[:c.remaining]
			}
			n, err := c.Conn.Read(p)
			c.remaining -= int64(n)
			c.bodyDone()
			return n, err
		}
		if c.readErr != nil {
			err := c.readErr
			c.readErr = nil
			return 0, err
		}
		c.fill()
	}
}

// Lingering close bounds: how long, and how many bytes, a connection
// closed mid-request is drained before its socket closes.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 8 << 20
)

// Close closes the connection. Closed while the client may still be
// sending (a request body not read to its end, such as one answered 413
// for its size, or a refused request), it closes lingering, as net/http
// does: the write side is shut first, so the answer already written
// reaches the client, and what the client still sends is read and dropped,
// for up to lingerTimeout or lingerBytes, before the socket closes. A
// socket closed with the client's bytes unread makes the kernel reset the
// connection, and the client then reports a failed write (connection reset
// by peer) instead of the answer.
func (c *Conn) Close() error {
	if c.lingering.Load() {
		return nil // the lingering close closes the socket
	}
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || !c.mid.Load() || !c.lingering.CompareAndSwap(false, true) {
		return c.Conn.Close()
	}
	if err := cw.CloseWrite(); err != nil {
		return c.Conn.Close()
	}
	go func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
		_ = c.Conn.Close()
	}()
	return nil
}

// midRequest reports whether the client may still be sending: a request
// was refused, bytes are buffered unread, a request is part read, or a
// body is not read to its end. Read's goroutine only.
func (c *Conn) midRequest() bool {
	return c.refused != nil || c.off < c.end ||
		(c.st == stBody || c.st == stChunkData || c.st == stChunkSize || c.st == stChunkEnd || c.st == stTrailer) ||
		c.block.started
}

// release returns the buffer to the pool once everything in it is out.
func (c *Conn) release() {
	if c.off == c.end && c.buf != nil {
		if c.pooled != nil {
			bufPool.Put(c.pooled)
		}
		c.buf, c.pooled, c.off, c.scan, c.end = nil, nil, 0, 0, 0
	}
}

// fill reads more from the connection into buf, keeping unread bytes.
// The underlying error is kept for Read to return after what was read.
func (c *Conn) fill() {
	if c.buf == nil {
		c.pooled = bufPool.Get().(*[]byte)
		c.buf = (*c.pooled)[:0]
		c.off, c.scan, c.end = 0, 0, 0
	}
	if c.off > 0 {
		n := copy(c.buf[:cap(c.buf)], c.buf[c.off:c.end])
		c.scan -= c.off
		c.end, c.off = n, 0
	}
	full := c.buf[:cap(c.buf)]
	if c.end == len(full) {
		grown := make([]byte, 2*len(full))
		copy(grown, full[:c.end])
		full, c.pooled = grown, nil
	}
	n, err := c.Conn.Read(full[c.end:])
	c.buf = full[:c.end+n]
	c.end += n
	if err != nil {
		c.readErr = err
	}
}

// step checks buffered bytes from scan on. It reports whether it made
// progress; false means it needs more bytes (or refused the request).
func (c *Conn) step() bool {
	switch c.st {
	case stHeader, stTrailer:
		return c.stepBlock()
	case stBody, stChunkData:
		k := int64(c.end - c.scan)
		if k > c.remaining {
			k = c.remaining
		}
		c.scan += int(k)
		c.remaining -= k
		c.bodyDone()
		return true
	case stChunkSize:
		return c.stepChunkSize()
	case stChunkEnd:
		if c.end-c.scan < 2 {
			if c.buf[c.scan] != '\r' {
				c.refuse(refuse("chunk data not followed by CRLF"))
			}
			return false
		}
		if c.buf[c.scan] != '\r' || c.buf[c.scan+1] != '\n' {
			c.refuse(refuse("chunk data not followed by CRLF"))
			return false
		}
		c.scan += 2
		c.st = stChunkSize
		return true
	}
	return false
}

// bodyDone moves on when a body or chunk's data is complete.
func (c *Conn) bodyDone() {
	if c.remaining > 0 {
		return
	}
	switch c.st {
	case stBody:
		c.st = stHeader
	case stChunkData:
		c.st = stChunkEnd
	}
}

// refuse records why and hands out the first byte of the refused request
// (see the package comment), unless part of it is already out.
func (c *Conn) refuse(e *Error) {
	c.refused = e
	if c.st == stHeader {
		for i := c.scan; i < c.end; i++ {
			if b := c.buf[i]; b != '\r' && b != '\n' {
				c.scan = i + 1
				break
			}
		}
	}
}

// stepBlock checks the complete lines of a header or trailer block from
// scan+pos; at the blank line it checks the block as a whole and hands it
// out at once.
func (c *Conn) stepBlock() bool {
	progressed := false
	for {
		start := c.scan + c.pos
		i := indexLF(c.buf[start:c.end])
		if i < 0 {
			if c.end-c.scan > c.maxHeader {
				c.refuse(&Error{Status: 431, Reason: "request header block too large"})
			}
			return progressed
		}
		line := c.buf[start : start+i]
		c.pos += i + 1
		progressed = true
		if c.pos > c.maxHeader {
			c.refuse(&Error{Status: 431, Reason: "request header block too large"})
			return false
		}
		if len(line) == 0 || line[len(line)-1] != '\r' {
			c.refuse(refuse("line not ended by CRLF"))
			return false
		}
		line = line[:len(line)-1]
		var err *Error
		switch {
		case c.st == stTrailer:
			if len(line) == 0 {
				c.endBlock()
				return true
			}
			err = c.trailerField(line)
		case !c.block.started:
			if len(line) == 0 {
				// Empty lines before a request line are allowed
				// (RFC 9112 §2.2); hand them out as they come.
				c.scan += c.pos
				c.pos = 0
				continue
			}
			err = c.requestLine(line)
		case len(line) == 0:
			if err = c.blockFraming(); err == nil {
				c.endBlock()
				return true
			}
		default:
			err = c.field(line)
		}
		if err != nil {
			c.refuse(err)
			return false
		}
	}
}

// endBlock hands out the checked block and moves to its body.
func (c *Conn) endBlock() {
	c.scan += c.pos
	c.pos = 0
	if c.st == stTrailer {
		c.st = stHeader
		return
	}
	b := c.block
	c.block = blockState{}
	switch {
	case b.sawTE:
		c.st = stChunkSize
	case b.contentLength > 0:
		c.st, c.remaining = stBody, b.contentLength
	default:
		c.st = stHeader
	}
}

func (c *Conn) blockFraming() *Error {
	b := &c.block
	if b.sawCL && b.sawTE {
		return refuse("both Content-Length and Transfer-Encoding")
	}
	if b.sawTE && b.http10 {
		return refuse("Transfer-Encoding on an HTTP/1.0 request")
	}
	return nil
}

// requestLine checks METHOD SP request-target SP HTTP-version.
func (c *Conn) requestLine(line []byte) *Error {
	sp1 := indexByte(line, ' ')
	if sp1 <= 0 || !isToken(line[:sp1]) {
		return refuse("malformed request line")
	}
	rest := line[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		return refuse("malformed request line")
	}
	for _, b := range rest[:sp2] {
		if b <= ' ' || b >= 0x7f {
			return refuse("malformed request target")
		}
	}
	switch string(rest[sp2+1:]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		c.block.http10 = true
	default:
		return refuse("unsupported HTTP version")
	}
	c.block.started = true
	return nil
}

// field checks one header field line and notes the framing fields.
func (c *Conn) field(line []byte) *Error {
	name, value, err := splitField(line)
	if err != nil {
		return err
	}
	switch {
	case equalFold(name, "content-length"):
		if c.block.sawCL {
			return refuse("more than one Content-Length")
		}
		c.block.sawCL = true
		n, ok := parseDigits(value)
		if !ok {
			return refuse("malformed Content-Length")
		}
		c.block.contentLength = n
	case equalFold(name, "transfer-encoding"):
		if c.block.sawTE {
			return refuse("more than one Transfer-Encoding")
		}
		c.block.sawTE = true
		if !equalFold(value, "chunked") {
			return refuse("unsupported Transfer-Encoding (only chunked is accepted)")
		}
	}
	return nil
}

func (c *Conn) trailerField(line []byte) *Error {
	name, _, err := splitField(line)
	if err != nil {
		return err
	}
	if equalFold(name, "content-length") || equalFold(name, "transfer-encoding") || equalFold(name, "host") {
		return refuse("framing field in a trailer")
	}
	return nil
}

// splitField splits "name:" OWS value OWS, refusing obs-fold, non-token
// names and control bytes in the value.
func splitField(line []byte) (name, value []byte, err *Error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, refuse("folded header line (obs-fold)")
	}
	colon := indexByte(line, ':')
	if colon < 0 {
		return nil, nil, refuse("header line without a colon")
	}
	name = line[:colon]
	if len(name) == 0 || !isToken(name) {
		return nil, nil, refuse("malformed header name")
	}
	value = line[colon+1:]
	if hasBadValueByte(value) {
		return nil, nil, refuse("control byte in a header value")
	}
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	return name, value, nil
}

// stepChunkSize checks "HEX [; ext] CRLF" and moves to the chunk's data,
// or to the trailer after the last chunk.
func (c *Conn) stepChunkSize() bool {
	i := indexLF(c.buf[c.scan:c.end])
	if i < 0 {
		if c.end-c.scan > maxLine {
			c.refuse(refuse("chunk-size line too long"))
		}
		return false
	}
	line := c.buf[c.scan : c.scan+i]
	if len(line) == 0 || line[len(line)-1] != '\r' {
		c.refuse(refuse("chunk-size line not ended by CRLF"))
		return false
	}
	line = line[:len(line)-1]
	var size int64
	digits := 0
	for ; digits < len(line); digits++ {
		v := unhex(line[digits])
		if v < 0 {
			break
		}
		if digits >= 15 {
			c.refuse(refuse("chunk size too large"))
			return false
		}
		size = size<<4 | int64(v)
	}
	if digits == 0 {
		c.refuse(refuse("malformed chunk size"))
		return false
	}
	if ext := line[digits:]; len(ext) > 0 {
		if ext[0] != ';' {
			c.refuse(refuse("malformed chunk size"))
			return false
		}
		if hasBadValueByte(ext) {
			c.refuse(refuse("control byte in a chunk extension"))
			return false
		}
	}
	c.scan += i + 1
	if size == 0 {
		c.st, c.pos = stTrailer, 0
	} else {
		c.st, c.remaining = stChunkData, size
	}
	return true
}

// errors.As target check at compile time.
var _ error = (*Error)(nil)

// IsRefusal reports whether err (or what it wraps) is a guard refusal,
// and returns it.
func IsRefusal(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func indexLF(b []byte) int { return bytes.IndexByte(b, '\n') }

func indexByte(b []byte, x byte) int { return bytes.IndexByte(b, x) }

// badValue marks the bytes a field value or chunk extension may not hold:
// controls other than HTAB, and DEL.
var badValue = func() (t [256]bool) {
	for c := 0; c < ' '; c++ {
		t[c] = c != '\t'
	}
	t[0x7f] = true
	return t
}()

func hasBadValueByte(b []byte) bool {
	for _, v := range b {
		if badValue[v] {
			return true
		}
	}
	return false
}

// isToken reports whether b is 1*tchar (RFC 9110 §5.6.2).
func isToken(b []byte) bool {
	for _, v := range b {
		if !tchar[v] {
			return false
		}
	}
	return len(b) > 0
}

var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, v := range b {
		if 'A' <= v && v <= 'Z' {
			v += 'a' - 'A'
		}
		if v != lower[i] {
			return false
		}
	}
	return true
}

// parseDigits parses 1*DIGIT, at most 18 digits.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, v := range b {
		if v < '0' || v > '9' {
			return 0, false
		}
		n = n*10 + int64(v-'0')
	}
	return n, true
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}
