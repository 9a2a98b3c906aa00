// Package h1 is a small HTTP/1.1 client for Tollgate's two hot links: the
// gateway's link to each worker and a worker's link to its OpenAI-compatible
// upstream.
//
// Each request is written, and its response read, on the caller's own
// goroutine. net/http's transport instead hands every request to a write
// goroutine and every response back from a read goroutine (about four
// goroutine hand-offs per request, more when the body ends); on a busy host
// each hand-off is a thread wake-up that may wait for a CPU, and those waits
// are what a request's tail latency is made of. Connections are kept alive
// and pooled per origin (most recently used first); a context cancels a
// request at any point, body reads included, by expiring its connection's
// deadline, and a connection whose request was cancelled is never reused.
//
// What it leaves out, on purpose: HTTP/2, proxies, redirects, cookies,
// compression, Expect: 100-continue and request bodies other than a byte
// slice. Anything unusual in a response (a malformed status line or header,
// an oversized header, a bad chunk) is an error, never a guess.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for Options.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultMaxIdle        = 64
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
)

// bufSize is each connection's read and write buffer. Longer header lines
// are assembled (within Options.MaxHeaderBytes); larger bodies stream.
const bufSize = 4 << 10

// Options configures a Client. Zero values take the defaults.
type Options struct {
	DialTimeout time.Duration
	// MaxIdle bounds the idle keep-alive connections kept for reuse.
	MaxIdle int
	// IdleTimeout: an idle connection older than this is closed instead of
	// reused (keep it below the server's own idle timeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a response's status line and header together.
	MaxHeaderBytes int
	// TLS configures https origins (default: the system's roots, the URL's
	// host as the server name).
	TLS *tls.Config
	// Dial, when set, opens each connection instead of a TCP dial to the
	// base URL's host (e.g. a stream of a worker's outbound link); TLS, for
	// an https base, still runs over what it returns.
	Dial func(ctx context.Context) (net.Conn, error)
}

// Client sends requests to one origin. It is safe for concurrent use.
type Client struct {
	addr   string // host:port to dial
	host   string // the Host header
	prefix string // the base URL's path, prepended to each request's
	tls    *tls.Config
	opts   Options
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*conn // most recently used last
	closed bool
}

// New returns a client for the origin of base ("http://host:port/prefix" or
// https). The base's path is prepended to every request's path.
func New(base string, opts Options) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("h1: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("h1: base URL %q is not http(s)://host[:port][/path]", base)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.MaxIdle <= 0 {
		opts.MaxIdle = DefaultMaxIdle
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	c := &Client{
		host:   u.Host,
		prefix: strings.TrimRight(u.EscapedPath(), "/"),
		opts:   opts,
		dialer: net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
	}
	port := u.Port()
	if u.Scheme == "https" {
		c.tls = opts.TLS
		if c.tls == nil {
			c.tls = &tls.Config{}
		}
		c.tls = c.tls.Clone()
		if c.tls.ServerName == "" {
			c.tls.ServerName = u.Hostname()
		}
		c.tls.NextProtos = []string{"http/1.1"}
		if port == "" {
			port = "443"
		}
	} else if port == "" {
		port = "80"
	}
	c.addr = net.JoinHostPort(u.Hostname(), port)
	return c, nil
}

// Field is one request header.
type Field struct{ Name, Value string }

// Request is one request. Path is appended to the base URL's path and may
// carry a query.
type Request struct {
	Method string
	Path   string
	Header []Field
	Body   []byte
}

// Response is a response whose status line and header have been read. Its
// Body must be closed; reading it to its end returns the connection to the
// pool, closing it earlier closes the connection.
type Response struct {
	Status int
	Header Header
	Body   io.ReadCloser
	body   *body
}

// Abort makes a Read of the body blocked now, or made later, fail, and the
// connection is not reused. It is safe to call from any goroutine, also
// after the body has ended (it then does nothing).
func (r *Response) Abort() {
	if r.body != nil && r.body.state.CompareAndSwap(bodyReading, bodyAborted) {
		r.body.conn.expire()
	}
}

// Header is a response's header fields in the order received, names as
// sent (compare them with Get, which ignores case).
type Header []Field

// Get returns the first value of the named field, or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Errors.
var (
	ErrClosed     = errors.New("h1: client closed")
	ErrBodyClosed = errors.New("h1: read on a closed body")
)

// Do sends req and reads the response's status line and header. A request
// on a reused connection that the server had already closed (the request
// unread) is sent once more on a fresh connection. Cancelling ctx aborts
// the request, or the body's reads once Do has returned.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	if err := validRequest(req); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		// A retry dials: the server that closed one idle connection has
		// likely closed the others too.
		cn, err := c.get(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, cn.expire)
		resp, retry, err := c.roundTrip(cn, req, stop)
		if err == nil {
			return resp, nil
		}
		stop()
		cn.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("h1: %w (%w)", context.Cause(ctx), err)
		}
		if !(retry && cn.reused && attempt == 0) {
			return nil, err
		}
	}
}

// CloseIdle closes the idle connections; requests in flight go on.
func (c *Client) CloseIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, cn := range idle {
		cn.close()
	}
}

// Close closes the idle connections and makes later requests fail with
// ErrClosed. Connections of requests in flight close when they end.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.CloseIdle()
	return nil
}

type conn struct {
	hdr      []byte // scratch for a response's header lines
	line     []byte // scratch for a line longer than br's buffer
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	reused   bool
	lastUsed time.Time
}

// expire makes the connection's pending and future I/O fail at once.
func (cn *conn) expire() { _ = cn.nc.SetDeadline(time.Unix(1, 0)) }

func (cn *conn) close() { _ = cn.nc.Close() }

// get takes the most recently used idle connection that is young enough, or
// dials one (always with fresh).
func (c *Client) get(ctx context.Context, fresh bool) (*conn, error) {
	now := time.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	var stale []*conn
	var cn *conn
	for len(c.idle) > 0 && !fresh {
		last := c.idle[len(c.idle)-1]
		c.idle[len(c.idle)-1] = nil
		c.idle = c.idle[:len(c.idle)-1]
		if now.Sub(last.lastUsed) > c.opts.IdleTimeout {
			stale = append(stale, last)
			continue
		}
		cn = last
		break
	}
	c.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
	if cn != nil {
		if m, ok := cn.nc.(IdleMarker); ok {
			m.SetIdle(false)
		}
		cn.reused = true
		return cn, nil
	}
	return c.dial(ctx)
}

func (c *Client) dial(ctx context.Context) (*conn, error) {
	var nc net.Conn
	var err error
	if c.opts.Dial != nil {
		nc, err = c.opts.Dial(ctx)
	} else {
		nc, err = c.dialer.DialContext(ctx, "tcp", c.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("h1: dial %s: %w", c.addr, err)
	}
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("h1: TLS handshake with %s: %w", c.addr, err)
		}
		nc = tc
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, bufSize), bw: bufio.NewWriterSize(nc, bufSize)}, nil
}

// IdleMarker is implemented by connections that want to know when they
// sit in the idle pool (a worker link's stream: data arriving then answers
// no request). SetIdle(true) is called before a connection is parked and
// SetIdle(false) before it is taken out for a request.
type IdleMarker interface{ SetIdle(idle bool) }

// put returns a connection whose response has been read to its end. One
// with bytes already buffered past that response (the server sent what no
// request asked for) is closed instead.
func (c *Client) put(cn *conn) {
	cn.lastUsed = time.Now()
	if cn.br.Buffered() > 0 {
		cn.close()
		return
	}
	if m, ok := cn.nc.(IdleMarker); ok {
		m.SetIdle(true)
	}
	c.mu.Lock()
	if c.closed || len(c.idle) >= c.opts.MaxIdle {
		c.mu.Unlock()
		cn.close()
		return
	}
	c.idle = append(c.idle, cn)
	c.mu.Unlock()
}

func validRequest(req *Request) error {
	if req.Method == "" || strings.ContainsAny(req.Method, " \r\n") {
		return fmt.Errorf("h1: bad method %q", req.Method)
	}
	if !strings.HasPrefix(req.Path, "/") || strings.ContainsAny(req.Path, " \r\n") {
		return fmt.Errorf("h1: bad path %q", req.Path)
	}
	for _, f := range req.Header {
		if f.Name == "" || strings.ContainsAny(f.Name, " :\r\n") || strings.ContainsAny(f.Value, "\r\n") {
			return fmt.Errorf("h1: bad header field %q", f.Name)
		}
	}
	return nil
}

// roundTrip writes req and reads the response head. retry reports a
// failure that left the request unprocessed by the server: a write that
// failed, or a connection closed before any byte of a response.
func (c *Client) roundTrip(cn *conn, req *Request, stop func() bool) (resp *Response, retry bool, err error) {
	w := cn.bw
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(c.prefix)
	w.WriteString(req.Path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(c.host)
	w.WriteString("\r\nUser-Agent: tollgate\r\n")
	if req.Body != nil || req.Method == http.MethodPost || req.Method == http.MethodPut {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.Itoa(len(req.Body)))
		w.WriteString("\r\n")
	}
	for _, f := range req.Header {
		w.WriteString(f.Name)
		w.WriteString(": ")
		w.WriteString(f.Value)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(req.Body)
	if err := w.Flush(); err != nil {
		return nil, true, fmt.Errorf("h1: write request: %w", err)
	}
	for {
		resp, err = c.readHead(cn)
		if err != nil {
			return nil, errors.Is(err, errNothingRead), err
		}
		if resp.Status >= 200 || resp.Status == http.StatusSwitchingProtocols {
			break
		}
		// 1xx interim responses carry no body; the final one follows.
	}
	if resp.Status == http.StatusSwitchingProtocols {
		return nil, false, errors.New("h1: the server switched protocols")
	}
	b := &body{c: c, cn: cn, conn: cn, stop: stop, reusable: true}
	var te, cl []string
	for _, f := range resp.Header {
		switch {
		case strings.EqualFold(f.Name, "Connection"):
			for _, tok := range strings.Split(f.Value, ",") {
				if strings.EqualFold(strings.TrimSpace(tok), "close") {
					b.reusable = false
				}
			}
		case strings.EqualFold(f.Name, "Transfer-Encoding"):
			te = append(te, f.Value)
		case strings.EqualFold(f.Name, "Content-Length"):
			cl = append(cl, f.Value)
		}
	}
	switch {
	case resp.Status == http.StatusNoContent || resp.Status == http.StatusNotModified:
		b.r, b.remain = cn.br, 0
		b.sized = true
	case len(te) > 0:
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return nil, false, fmt.Errorf("h1: unsupported Transfer-Encoding %q", te)
		}
		b.r, b.chunked = httputil.NewChunkedReader(cn.br), true
	case len(cl) > 0:
		n, err := contentLength(cl)
		if err != nil {
			return nil, false, err
		}
		b.r, b.remain, b.sized = cn.br, n, true
	default:
		// Delimited by the connection's end.
		b.r, b.reusable = cn.br, false
	}
	resp.Body, resp.body = b, b
	if b.sized && b.remain == 0 {
		b.finish()
	}
	return resp, false, nil
}

var errNothingRead = errors.New("h1: connection closed before a response")

// readHead reads a status line and header.
func (c *Client) readHead(cn *conn) (*Response, error) {
	budget := c.opts.MaxHeaderBytes
	line, err := readLine(cn.br, &budget, &cn.line)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, fmt.Errorf("%w: %w", errNothingRead, err)
		}
		return nil, fmt.Errorf("h1: read status line: %w", err)
	}
	proto, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || !(string(proto) == "HTTP/1.1" || string(proto) == "HTTP/1.0") || len(rest) < 3 {
		return nil, fmt.Errorf("h1: malformed status line %q", truncate(line))
	}
	code, _, _ := bytes.Cut(rest, []byte(" "))
	status, err := strconv.Atoi(string(code))
	if err != nil || len(code) != 3 || status < 100 {
		return nil, fmt.Errorf("h1: malformed status code in %q", truncate(line))
	}
	// The header's lines are gathered into one string, which the fields
	// then share: two allocations per response, not two per field.
	raw := cn.hdr[:0]
	var spanBuf [16][4]int
	spans := spanBuf[:0] // name start, name end, value start, value end in raw
	for {
		line, err := readLine(cn.br, &budget, &cn.line)
		if err != nil {
			return nil, fmt.Errorf("h1: read header: %w", err)
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("h1: malformed header line %q", truncate(line))
		}
		value = bytes.TrimSpace(value)
		n0 := len(raw)
		raw = append(raw, name...)
		v0 := len(raw)
		raw = append(raw, value...)
		spans = append(spans, [4]int{n0, v0, v0, len(raw)})
	}
	cn.hdr = raw
	all := string(raw)
	resp := &Response{Status: status, Header: make(Header, len(spans), len(spans)+1)}
	for i, sp := range spans {
		resp.Header[i] = Field{Name: all[sp[0]:sp[1]], Value: all[sp[2]:sp[3]]}
	}
	if string(proto) == "HTTP/1.0" && !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
		resp.Header = append(resp.Header, Field{Name: "Connection", Value: "close"})
	}
	return resp, nil
}

// readLine reads one CRLF- (or LF-) terminated line without its ending,
// charging its length to *budget. The line is valid until the next read; a
// line longer than the reader's buffer is assembled in *scratch.
func readLine(br *bufio.Reader, budget *int, scratch *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		buf := append((*scratch)[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(buf) > *budget {
				return nil, errors.New("response header too large")
			}
			line, err = br.ReadSlice('\n')
			buf = append(buf, line...)
		}
		*scratch, line = buf, buf
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, errors.New("response header too large")
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
	return line, nil
}

func contentLength(values []string) (int64, error) {
	first := strings.TrimSpace(values[0])
	for _, v := range values[1:] {
		if strings.TrimSpace(v) != first {
			return 0, fmt.Errorf("h1: conflicting Content-Length values %q", values)
		}
	}
	n, err := strconv.ParseInt(first, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("h1: bad Content-Length %q", first)
	}
	return n, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// body reads a response body off its connection and hands the connection
// back once the body has been read to its end.
type body struct {
	c        *Client
	cn       *conn // nil once released
	conn     *conn // never nil: what Abort expires while state is reading
	state    atomic.Int32
	stop     func() bool // unregisters the context's cancellation
	r        io.Reader
	chunked  bool
	sized    bool  // Content-Length framing
	remain   int64 // bytes left when sized
	reusable bool
	eof      bool
	closed   bool
	err      error // the first read error, returned again
}

func (b *body) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, ErrBodyClosed
	case b.eof:
		return 0, io.EOF
	case b.err != nil:
		return 0, b.err
	case len(p) == 0:
		return 0, nil
	}
	if b.sized && int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.r.Read(p)
	if b.sized {
		b.remain -= int64(n)
		if b.remain == 0 {
			b.finish()
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	switch {
	case err == io.EOF && b.chunked:
		budget := b.c.opts.MaxHeaderBytes
		for {
			line, terr := readLine(b.cn.br, &budget, &b.cn.line)
			if terr != nil {
				b.err = fmt.Errorf("h1: read trailer: %w", terr)
				return n, b.err
			}
			if len(line) == 0 {
				break
			}
		}
		b.finish()
	case err == io.EOF:
		b.finish() // delimited by the connection's end
	case err != nil:
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
	}
	return n, err
}

// Body states: Abort may expire the connection only while it is still the
// body's; finish hands it on only if Abort has not.
const (
	bodyReading int32 = iota
	bodyDone
	bodyAborted
)

// finish marks the body read to its end and releases the connection: back
// to the pool when it may carry another request and its request was neither
// cancelled nor aborted meanwhile.
func (b *body) finish() {
	if b.eof {
		return
	}
	b.eof = true
	if b.stop() && b.state.CompareAndSwap(bodyReading, bodyDone) && b.reusable {
		b.c.put(b.cn)
	} else {
		b.cn.close()
	}
	b.cn = nil
}

// Close releases the body. Closing before the end closes the connection.
func (b *body) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if !b.eof {
		b.state.Store(bodyDone)
		b.stop()
		b.cn.close()
		b.cn = nil
	}
	return nil
}
