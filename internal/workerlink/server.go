package workerlink

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Limits bound what one worker link may hold on the gateway. Zero values
// take the defaults.
type Limits struct {
	// HandshakeTimeout bounds the TLS handshake of a new connection
	// (default 10 s).
	HandshakeTimeout time.Duration
	// MaxSessions bounds the worker sessions (and handshakes in progress)
	// at once (default 1024).
	MaxSessions int
	// MaxPending bounds the connections on which no worker has registered
	// yet (handshakes in progress included) at once, and MaxPendingPerHost
	// those from one remote address (defaults 128 and 32): without mutual
	// TLS a session needs no credentials until it registers, and these
	// caps keep such sessions from taking the registered workers' slots.
	MaxPending, MaxPendingPerHost int
	// RegisterTimeout is how long a session may go without a worker
	// registering on it before it is closed (default 30 s).
	RegisterTimeout time.Duration
	// MaxStreamsPerSession bounds the streams a worker opened that its
	// session holds at once, half-closed and unaccepted ones included
	// (default 64); a worker that goes over it has its session closed. The
	// gateway's own streams (batches, its idle pool) do not count.
	MaxStreamsPerSession int
	// AcceptBacklog bounds a session's streams not yet accepted (default 16).
	AcceptBacklog int
	// MaxStreamWindow is each stream's receive window (default 256 KiB,
	// yamux's minimum).
	MaxStreamWindow uint32
	// KeepAlive is the ping interval; a ping unanswered within WriteTimeout
	// ends the session (defaults 2 s and 5 s).
	KeepAlive, WriteTimeout time.Duration
}

func (l *Limits) setDefaults() {
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.MaxSessions <= 0 {
		l.MaxSessions = 1024
	}
	if l.MaxPending <= 0 {
		l.MaxPending = 128
	}
	if l.MaxPendingPerHost <= 0 {
		l.MaxPendingPerHost = 32
	}
	if l.RegisterTimeout <= 0 {
		l.RegisterTimeout = 30 * time.Second
	}
	if l.MaxStreamsPerSession <= 0 {
		l.MaxStreamsPerSession = 64
	}
	if l.AcceptBacklog <= 0 {
		l.AcceptBacklog = 16
	}
	if l.MaxStreamWindow < 256<<10 {
		l.MaxStreamWindow = 256 << 10
	}
	if l.KeepAlive <= 0 {
		l.KeepAlive = 2 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 5 * time.Second
	}
}

func (l Limits) yamux() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = l.AcceptBacklog
	c.EnableKeepAlive = true
	c.KeepAliveInterval = l.KeepAlive
	c.ConnectionWriteTimeout = l.WriteTimeout
	c.MaxStreamWindowSize = l.MaxStreamWindow
	c.StreamOpenTimeout = l.WriteTimeout
	c.StreamCloseTimeout = 5 * time.Second
	c.LogOutput = io.Discard
	return c
}

// pendingMaxStreams caps the streams of a session no worker has
// registered on yet (Limits.MaxStreamsPerSession applies after).
const pendingMaxStreams = 4

// ServerConfig configures the gateway's end of the worker link.
type ServerConfig struct {
	// TLS is served on every connection; nil serves plain TCP, which
	// Insecure must then allow (tests and development only).
	TLS      *tls.Config
	Insecure bool
	Limits   Limits
	Logger   *slog.Logger
}

// ErrNoSession is returned by Server.Dial for a session that is not (or no
// longer) connected.
var ErrNoSession = errors.New("workerlink: no such worker session")

// ErrClosed is returned once a Server or Dialer is closed.
var ErrClosed = errors.New("workerlink: closed")

// Server accepts worker connections. Streams the workers open come out of
// Streams (a net.Listener for the gateway's HTTP server); Dial opens a
// stream to one worker's session.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	refused *refusalLog   // refused and abusive connections, rate-limited
	slots   chan struct{} // one per session or handshake in progress
	pending chan struct{} // one per connection not yet registered
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	// noStreams is closed by Streams' Close: streams workers open are then
	// refused, while the gateway's streams (batches in flight) go on.
	noStreams     chan struct{}
	noStreamsOnce sync.Once

	mu            sync.Mutex
	sessions      map[string]*yamux.Session
	guards        map[string]*linkGuard // each session's, by ID
	pendingByHost map[string]int
	// workerOn is the session each worker last registered on, and
	// sessionWorkers the workers registered on each session.
	workerOn       map[string]string
	sessionWorkers map[string]map[string]bool
	lns            []net.Listener
}

// NewServer checks cfg and builds a server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.TLS == nil && !cfg.Insecure {
		return nil, errors.New("workerlink: a TLS config is required (Insecure allows plain TCP for tests)")
	}
	cfg.Limits.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger, refused: &refusalLog{log: cfg.Logger}, slots: make(chan struct{}, cfg.Limits.MaxSessions),
		pending: make(chan struct{}, cfg.Limits.MaxPending), pendingByHost: map[string]int{},
		workerOn: map[string]string{}, sessionWorkers: map[string]map[string]bool{},
		streams: make(chan net.Conn), done: make(chan struct{}), noStreams: make(chan struct{}), sessions: map[string]*yamux.Session{},
		guards: map[string]*linkGuard{}}, nil
}

// Serve accepts worker connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.refused.Warn("worker link refused: too many sessions", "remote", c.RemoteAddr().String(), "max_sessions", s.cfg.Limits.MaxSessions)
			c.Close()
			continue
		}
		registered, ok := s.admitPending(c.RemoteAddr())
		if !ok {
			<-s.slots
			c.Close()
			continue
		}
		go func() {
			defer func() { <-s.slots }()
			defer registered()
			s.serveConn(c, registered)
		}()
	}
}

// admitPending takes a slot for a connection no worker has registered on
// yet, within MaxPending and MaxPendingPerHost; release (idempotent) gives
// it back, at registration or when the connection ends.
func (s *Server) admitPending(remote net.Addr) (release func(), ok bool) {
	host := remote.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	lim := s.cfg.Limits
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pendingByHost[host] >= lim.MaxPendingPerHost {
		s.refused.Warn("worker link refused: too many sessions not yet registered from this host", "remote", remote.String(), "max_pending_per_host", lim.MaxPendingPerHost)
		return nil, false
	}
	select {
	case s.pending <- struct{}{}:
	default:
		s.refused.Warn("worker link refused: too many sessions not yet registered", "remote", remote.String(), "max_pending", lim.MaxPending)
		return nil, false
	}
	s.pendingByHost[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.pendingByHost[host]--; s.pendingByHost[host] <= 0 {
				delete(s.pendingByHost, host)
			}
			s.mu.Unlock()
			<-s.pending
		})
	}, true
}

// serveConn runs one worker connection: handshake, session, its streams.
// registered is called once a worker registers on the session; a session
// that goes RegisterTimeout without one is closed.
func (s *Server) serveConn(c net.Conn, registered func()) {
	remote := c.RemoteAddr().String()
	peer := ""
	if s.cfg.TLS != nil {
		tc := tls.Server(c, s.cfg.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Limits.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.refused.Warn("worker link refused: TLS handshake failed", "remote", remote, "reason", Describe(err), "err", err)
			c.Close()
			return
		}
		if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
			peer = pcs[0].Subject.String()
		}
		c = tc
	}
	id := newID()
	// Until a worker registers, the session needs a stream or two
	// (challenge, register): a peer with no credentials yet gets no more
	// than pendingMaxStreams, each of which may buffer a window.
	maxStreams := min(pendingMaxStreams, s.cfg.Limits.MaxStreamsPerSession)
	guard := newLinkGuard(c, maxStreams, func(abuse error) {
		switch abuse {
		case errPingFlood:
			s.refused.Warn("worker link closed: ping flood (the worker sent pings and did not read the replies)", "session", id, "remote", remote, "max_unanswered_pings", maxUnansweredPings)
		case errTooManyStreams:
			s.refused.Warn("worker link closed: too many streams", "session", id, "remote", remote, "max_streams", s.cfg.Limits.MaxStreamsPerSession, "max_streams_unregistered", pendingMaxStreams)
		case errUnsolicited:
			s.refused.Warn("worker link closed: the worker sent data on an idle stream (no request was in flight on it)", "session", id, "remote", remote)
		}
	})
	sess, err := yamux.Server(newJoinedWriter(guard), s.cfg.Limits.yamux())
	if err != nil { // only a bad config, checked by the defaults
		s.log.Error("worker link: session", "err", err)
		c.Close()
		return
	}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		sess.Close()
		return
	default:
	}
	s.sessions[id] = sess
	s.guards[id] = guard
	s.mu.Unlock()
	s.log.Info("worker link up", "session", id, "remote", remote, "peer", peer)
	var regOnce sync.Once
	isRegistered := make(chan struct{})
	markRegistered := func(workerID string) {
		regOnce.Do(func() {
			guard.setMaxStreams(s.cfg.Limits.MaxStreamsPerSession)
			registered()
			close(isRegistered)
		})
		s.bindWorker(id, workerID)
	}
	go func() {
		t := time.NewTimer(s.cfg.Limits.RegisterTimeout)
		defer t.Stop()
		select {
		case <-isRegistered:
		case <-sess.CloseChan():
		case <-t.C:
			s.refused.Warn("worker link closed: no worker registered in time", "session", id, "remote", remote, "register_timeout", s.cfg.Limits.RegisterTimeout)
			sess.Close()
		}
	}()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, id)
		delete(s.guards, id)
		for w := range s.sessionWorkers[id] {
			if s.workerOn[w] == id {
				delete(s.workerOn, w)
			}
		}
		delete(s.sessionWorkers, id)
		s.mu.Unlock()
		sess.Close()
		s.log.Info("worker link down", "session", id, "remote", remote)
	}()
	// The guard counts the streams the worker opened that the session
	// still tracks: open, half-closed (the worker never closed its side)
	// and unaccepted; each may buffer up to a window of data, so their
	// number is what is capped. The gateway's own streams (batches, its
	// idle pool) are not the worker's doing and do not count.
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		conn := &Stream{Conn: st, session: id, registered: markRegistered}
		select {
		case s.streams <- conn:
		case <-s.noStreams:
			conn.Close()
		case <-sess.CloseChan():
			conn.Close()
			return
		case <-s.done:
			conn.Close()
			return
		}
	}
}

// bindWorker records that workerID registered on session id. The session
// it was on before, if another, loses it; one left with no worker is
// closed: its worker moved to a new link, and an old one must not hold a
// registered session's slot (or one key could hold every slot by
// registering on each of many sessions in turn).
func (s *Server) bindWorker(id, workerID string) {
	s.mu.Lock()
	prev := s.workerOn[workerID]
	if prev == id {
		s.mu.Unlock()
		return
	}
	s.workerOn[workerID] = id
	if s.sessionWorkers[id] == nil {
		s.sessionWorkers[id] = map[string]bool{}
	}
	s.sessionWorkers[id][workerID] = true
	var stale *yamux.Session
	if ws := s.sessionWorkers[prev]; ws != nil {
		delete(ws, workerID)
		if len(ws) == 0 {
			stale = s.sessions[prev]
		}
	}
	s.mu.Unlock()
	if stale != nil {
		s.log.Info("worker link closed: its worker registered on another link", "session", prev, "worker", workerID, "now_on", id)
		stale.Close()
	}
}

// Dial opens a stream to the worker on session id.
func (s *Server) Dial(ctx context.Context, id string) (net.Conn, error) {
	s.mu.Lock()
	sess, guard := s.sessions[id], s.guards[id]
	s.mu.Unlock()
	if sess == nil {
		return nil, fmt.Errorf("%w %q", ErrNoSession, id)
	}
	type result struct {
		c   *yamux.Stream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		st, err := sess.OpenStream()
		ch <- result{st, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("workerlink: open stream on session %s: %w", id, r.err)
		}
		return &Stream{Conn: r.c, session: id, registered: func(string) {}, guard: guard, id: r.c.StreamID()}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Sessions is how many worker sessions are connected.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Streams is the listener of streams workers open, for the gateway's HTTP
// server. Closing it refuses further worker streams but keeps the sessions,
// so that a shutting-down gateway's batches in flight finish; Close ends
// them.
func (s *Server) Streams() net.Listener { return streamListener{s} }

// Close stops accepting, ends every session and fails Streams' Accept.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.mu.Lock()
		for _, ln := range s.lns {
			ln.Close()
		}
		for _, sess := range s.sessions {
			sess.Close()
		}
		s.mu.Unlock()
	})
	return nil
}

type streamListener struct{ s *Server }

func (l streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.streams:
		return c, nil
	case <-l.s.noStreams:
		return nil, net.ErrClosed
	case <-l.s.done:
		return nil, net.ErrClosed
	}
}

func (l streamListener) Close() error {
	l.s.noStreamsOnce.Do(func() { close(l.s.noStreams) })
	return nil
}
func (l streamListener) Addr() net.Addr { return linkAddr("worker-link") }

type linkAddr string

func (a linkAddr) Network() string { return "workerlink" }
func (a linkAddr) String() string  { return string(a) }

// Stream is one stream of a worker session. The gateway's HTTP handlers
// find the session a request came on with LinkSession.
type Stream struct {
	net.Conn
	session    string
	registered func(workerID string)
	// guard and id: a stream the gateway opened (Dial), whose idle spells
	// the guard watches (SetIdle).
	guard *linkGuard
	id    uint32
}

// SetIdle tells the link that the gateway's HTTP client parked this
// stream in its idle pool (true) or took it out to send a request
// (false). Data the worker sends on an idle stream answers no request: it
// would sit in the stream's buffer, up to a window (256 KiB) per idle
// stream, so it ends the session. (h1's pool calls it.)
func (s *Stream) SetIdle(idle bool) {
	if s.guard != nil {
		s.guard.setIdle(s.id, idle)
	}
}

// Close closes the stream and forgets its idle state.
func (s *Stream) Close() error {
	if s.guard != nil {
		s.guard.setIdle(s.id, false)
	}
	return s.Conn.Close()
}

// LinkSession is the ID of the session the stream belongs to.
func (s *Stream) LinkSession() string { return s.session }

// MarkRegistered tells the server that workerID registered on the
// stream's session: the session leaves the not-yet-registered caps and its
// register deadline, and the session the worker was on before, if another
// and left with no worker, is closed. The gateway calls it once a
// registration on the stream succeeded.
func (s *Stream) MarkRegistered(workerID string) { s.registered(workerID) }

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
