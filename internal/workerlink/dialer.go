package workerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// DialerConfig configures the worker's end of the link.
type DialerConfig struct {
	// Addr is the gateway's worker-link address (host:port).
	Addr string
	// TLS verifies the gateway (RootCAs or the system roots) and may carry
	// a client certificate; nil dials plain TCP, which Insecure must allow.
	TLS      *tls.Config
	Insecure bool
	// MinBackoff and MaxBackoff bound the redial delay (defaults 100 ms and
	// 2 s); each failure doubles it, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connect and handshake (default 5 s).
	DialTimeout time.Duration
	Limits      Limits
	Logger      *slog.Logger
}

// Dialer keeps one session to the gateway, redialling when it drops. It is
// the worker's net.Listener for batches (Accept) and the dialer of its
// calls to the gateway (DialContext).
type Dialer struct {
	cfg      DialerConfig
	log      *slog.Logger
	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once

	mu    sync.Mutex
	sess  *yamux.Session
	ready chan struct{} // closed while sess is live
}

// NewDialer checks cfg and builds a dialer; Run connects it.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("workerlink: gateway link address %q: %w", cfg.Addr, err)
	}
	if cfg.TLS == nil && !cfg.Insecure {
		return nil, errors.New("workerlink: a TLS config is required (Insecure allows plain TCP for tests)")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(2*time.Second, cfg.MinBackoff)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cfg.Limits.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Dialer{cfg: cfg, log: cfg.Logger, accepted: make(chan net.Conn), done: make(chan struct{}), ready: make(chan struct{})}, nil
}

// Run keeps the link up until ctx ends or Close.
func (d *Dialer) Run(ctx context.Context) error {
	defer d.Close()
	failures := 0
	for {
		sess, err := d.connect(ctx)
		if err == nil {
			failures = 0
			d.log.Info("gateway link up", "gateway", d.cfg.Addr)
			d.serve(ctx, sess)
			d.log.Warn("gateway link down; redialling", "gateway", d.cfg.Addr)
		} else {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.log.Warn("gateway link: dial failed", "gateway", d.cfg.Addr, "reason", Describe(err), "err", err)
			failures++
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return ErrClosed
		case <-time.After(d.backoff(failures)):
		}
	}
}

// backoff is the delay before the next dial after n consecutive failures:
// MinBackoff·2ⁿ capped at MaxBackoff, drawn uniformly from its upper half.
func (d *Dialer) backoff(n int) time.Duration {
	b := d.cfg.MinBackoff
	for i := 0; i < n && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	return b/2 + mrand.N(b/2+1)
}

func (d *Dialer) connect(ctx context.Context) (*yamux.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
	defer cancel()
	c, err := (&net.Dialer{KeepAlive: 15 * time.Second}).DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if d.cfg.TLS != nil {
		cfg := d.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(d.cfg.Addr)
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	rc := &readErrConn{Conn: c}
	sess, err := yamux.Client(newJoinedWriter(rc), d.cfg.Limits.yamux())
	if err != nil {
		c.Close()
		return nil, err
	}
	// A gateway that refuses after the handshake (TLS 1.3 checks the client
	// certificate after the client's handshake ends) shows here, its alert
	// as the connection's read error.
	if _, err := sess.Ping(); err != nil {
		sess.Close()
		if rerr := rc.err(); rerr != nil {
			err = rerr
		}
		return nil, fmt.Errorf("gateway closed the link: %w", err)
	}
	return sess, nil
}

// serve publishes sess and hands its streams to Accept until it ends.
func (d *Dialer) serve(ctx context.Context, sess *yamux.Session) {
	d.mu.Lock()
	d.sess = sess
	close(d.ready)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.sess = nil
		d.ready = make(chan struct{})
		d.mu.Unlock()
		sess.Close()
	}()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		select {
		case d.accepted <- st:
		case <-sess.CloseChan():
			st.Close()
			return
		case <-d.done:
			st.Close()
			return
		}
	}
}

// DialContext opens a stream to the gateway, waiting for the link to be up
// while ctx allows; network and addr are ignored (there is one gateway).
func (d *Dialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	for {
		d.mu.Lock()
		sess, ready := d.sess, d.ready
		d.mu.Unlock()
		if sess != nil {
			st, err := sess.OpenStream()
			if err == nil {
				return st, nil
			}
			if !sess.IsClosed() {
				return nil, fmt.Errorf("workerlink: open stream: %w", err)
			}
			continue // it just dropped; wait for the next one
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("workerlink: gateway link is down: %w", ctx.Err())
		case <-d.done:
			return nil, ErrClosed
		}
	}
}

// Accept returns the next stream the gateway opened (a batch).
func (d *Dialer) Accept() (net.Conn, error) {
	select {
	case c := <-d.accepted:
		return c, nil
	case <-d.done:
		return nil, net.ErrClosed
	}
}

// Close ends the link for good.
func (d *Dialer) Close() error {
	d.once.Do(func() {
		close(d.done)
		d.mu.Lock()
		if d.sess != nil {
			d.sess.Close()
		}
		d.mu.Unlock()
	})
	return nil
}

// Addr names the link.
func (d *Dialer) Addr() net.Addr { return linkAddr("link://" + d.cfg.Addr) }

// yamuxClient starts a client session on c with the link's limits.
func yamuxClient(c net.Conn, l Limits) (*yamux.Session, error) { return yamux.Client(c, l.yamux()) }

// readErrConn keeps the first read error of a connection, which yamux
// reports only as "session shutdown".
type readErrConn struct {
	net.Conn
	mu    sync.Mutex
	first error
}

func (c *readErrConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.first == nil {
			c.first = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *readErrConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}
