package workerlink

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the link's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func logger(buf *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a leaf certificate and key into dir and returns their paths.
func (c *ca) issue(t *testing.T, dir, name string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	write(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startServer serves a link on a loopback port; the gateway side answers
// GET /session with the session the request came on.
func startServer(t *testing.T, cfg ServerConfig) (*Server, string) {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Context().Value(connKey{}).(*Stream).LinkSession())
	}), ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	go hs.Serve(s.Streams())
	t.Cleanup(func() { s.Close(); hs.Close() })
	return s, ln.Addr().String()
}

type connKey struct{}

// startDialer runs a worker's link; the worker answers every request with
// "worker".
func startDialer(t *testing.T, cfg DialerConfig) *Dialer {
	t.Helper()
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "worker") })}
	go hs.Serve(d)
	t.Cleanup(func() { cancel(); <-done; hs.Close() })
	return d
}

func get(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://link/session", nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitSession waits for the server to hold n sessions and returns one ID.
func waitSession(t *testing.T, s *Server, n int) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		if len(s.sessions) == n {
			for id := range s.sessions {
				s.mu.Unlock()
				return id
			}
			s.mu.Unlock()
			return ""
		}
		s.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server never held %d sessions (has %d)", n, s.Sessions())
	return ""
}

func TestBothDirections(t *testing.T) {
	s, addr := startServer(t, ServerConfig{Insecure: true})
	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := get(ctx, d.DialContext)
	if err != nil {
		t.Fatal(err)
	}
	id := waitSession(t, s, 1)
	if got != id {
		t.Fatalf("worker's call came on session %q, want %q", got, id)
	}
	back, err := get(ctx, func(ctx context.Context, _, _ string) (net.Conn, error) { return s.Dial(ctx, id) })
	if err != nil || back != "worker" {
		t.Fatalf("gateway → worker: %q, %v", back, err)
	}
	if _, err := s.Dial(ctx, "nope"); !errors.Is(err, ErrNoSession) {
		t.Fatalf("dial unknown session: %v, want ErrNoSession", err)
	}
}

func TestTLSRefusals(t *testing.T) {
	dir := t.TempDir()
	gwCA, workerCA, otherCA := newCA(t, "gateway-ca"), newCA(t, "worker-ca"), newCA(t, "other-ca")
	srvCert, srvKey := gwCA.issue(t, dir, "gateway", time.Now().Add(time.Hour))
	write(t, filepath.Join(dir, "gw-ca.pem"), gwCA.pem)
	write(t, filepath.Join(dir, "worker-ca.pem"), workerCA.pem)
	write(t, filepath.Join(dir, "other-ca.pem"), otherCA.pem)
	goodCert, goodKey := workerCA.issue(t, dir, "worker", time.Now().Add(time.Hour))
	oldCert, oldKey := workerCA.issue(t, dir, "expired", time.Now().Add(-time.Hour))
	cases := []struct {
		name             string
		caFile           string
		cert, key        string
		ok               bool
		workerLog, gwLog string
	}{
		{name: "mutual TLS", caFile: "gw-ca.pem", cert: goodCert, key: goodKey, ok: true},
		{name: "wrong CA", caFile: "other-ca.pem", cert: goodCert, key: goodKey,
			workerLog: "unknown authority (wrong CA)", gwLog: "TLS handshake failed"},
		{name: "expired client certificate", caFile: "gw-ca.pem", cert: oldCert, key: oldKey,
			workerLog: "refused by the peer", gwLog: "certificate expired"},
		{name: "no client certificate", caFile: "gw-ca.pem",
			workerLog: "client certificate is required", gwLog: "no client certificate, and mutual TLS is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srvTLS, err := ServerTLS(srvCert, srvKey, filepath.Join(dir, "worker-ca.pem"), nil)
			if err != nil {
				t.Fatal(err)
			}
			var gwLog, workerLog syncBuffer
			s, addr := startServer(t, ServerConfig{TLS: srvTLS, Logger: logger(&gwLog)})
			cliTLS, err := ClientTLS(filepath.Join(dir, tc.caFile), tc.cert, tc.key, nil)
			if err != nil {
				t.Fatal(err)
			}
			cliTLS.ServerName = "localhost"
			d := startDialer(t, DialerConfig{Addr: addr, TLS: cliTLS, Logger: logger(&workerLog), MaxBackoff: 200 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = get(ctx, d.DialContext)
			if tc.ok {
				if err != nil {
					t.Fatalf("call over mutual TLS: %v\nworker log:\n%s\ngateway log:\n%s", err, workerLog.String(), gwLog.String())
				}
				return
			}
			if err == nil {
				t.Fatal("call succeeded, want the link refused")
			}
			if s.Sessions() != 0 {
				t.Fatalf("gateway holds %d sessions, want none", s.Sessions())
			}
			if !strings.Contains(workerLog.String(), tc.workerLog) {
				t.Errorf("worker log lacks %q:\n%s", tc.workerLog, workerLog.String())
			}
			if !strings.Contains(gwLog.String(), tc.gwLog) {
				t.Errorf("gateway log lacks %q:\n%s", tc.gwLog, gwLog.String())
			}
		})
	}
}

// A worker opening streams in a loop and never finishing a request on them
// loses its session once it holds more than MaxStreamsPerSession; another
// worker is served all along.
func TestStreamFloodIsBounded(t *testing.T) {
	const max = 8
	var gwLog syncBuffer
	_, addr := startServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog), Limits: Limits{MaxStreamsPerSession: max}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lim := Limits{}
	lim.setDefaults()
	attacker, err := yamuxClient(c, lim)
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	for i := 0; i < 500; i++ {
		st, err := attacker.Open()
		if err != nil {
			break
		}
		st.Write([]byte("GET /session HTTP/1.1\r\n")) // never finishes the request
		held = append(held, st)
	}
	select {
	case <-attacker.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatalf("the flooding session was not closed (%d streams)", attacker.NumStreams())
	}
	if !strings.Contains(gwLog.String(), "too many streams") {
		t.Fatalf("no refusal logged:\n%s", gwLog.String())
	}
	if n := len(held); n > 2*max+lim.AcceptBacklog {
		t.Logf("attacker opened %d streams before the reset reached it", n)
	}
	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := get(ctx, d.DialContext); err != nil {
		t.Fatalf("an honest worker was not served during the flood: %v", err)
	}
	_ = held
}

// Sessions beyond MaxSessions are refused at accept.
func TestMaxSessions(t *testing.T) {
	var gwLog syncBuffer
	s, addr := startServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog), Limits: Limits{MaxSessions: 1}})
	startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	waitSession(t, s, 1)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a second session was not refused: %v", err)
	}
	if !strings.Contains(gwLog.String(), "too many sessions") {
		t.Fatalf("no refusal logged:\n%s", gwLog.String())
	}
}

// A handshake that never starts is dropped after HandshakeTimeout.
func TestSlowHandshakeIsDropped(t *testing.T) {
	cfg, err := selfSigned(t)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: cfg, Limits: Limits{HandshakeTimeout: 200 * time.Millisecond}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a silent connection was held past the handshake timeout")
	}
}

func selfSigned(t *testing.T) (*tls.Config, error) {
	dir := t.TempDir()
	c := newCA(t, "ca")
	cert, key := c.issue(t, dir, "gw", time.Now().Add(time.Hour))
	return ServerTLS(cert, key, "", nil)
}

// A dropped link is redialled, and calls work again on the new session.
func TestReconnect(t *testing.T) {
	s1, addr := startServer(t, ServerConfig{Insecure: true})
	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true, MaxBackoff: 200 * time.Millisecond})
	first := waitSession(t, s1, 1)
	s1.Close()
	// The gateway restarts on the same port.
	s2, err := NewServer(ServerConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	go s2.Serve(ln)
	defer s2.Close()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "again") })}
	go hs.Serve(s2.Streams())
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A call may still catch the old session before the worker sees it
	// died; the next one goes over the new session.
	var got string
	for got != "again" && ctx.Err() == nil {
		if got, err = get(ctx, d.DialContext); err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got != "again" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
	if second := waitSession(t, s2, 1); second == first {
		t.Fatal("the new session reused the old ID")
	}
}

func TestBackoff(t *testing.T) {
	d, err := NewDialer(DialerConfig{Addr: "127.0.0.1:1", Insecure: true, MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		failures int
		lo, hi   time.Duration
	}{{0, 50 * time.Millisecond, 100 * time.Millisecond}, {1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond}, {20, time.Second, 2 * time.Second}} {
		t.Run(fmt.Sprint(tc.failures), func(t *testing.T) {
			for range 100 {
				if b := d.backoff(tc.failures); b < tc.lo || b > tc.hi {
					t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tc.failures, b, tc.lo, tc.hi)
				}
			}
		})
	}
}

func TestConfigRefused(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); err == nil {
		t.Error("a server without TLS or Insecure was built")
	}
	if _, err := NewDialer(DialerConfig{Addr: "gw:7000"}); err == nil {
		t.Error("a dialer without TLS or Insecure was built")
	}
	if _, err := NewDialer(DialerConfig{Addr: "gw", Insecure: true}); err == nil {
		t.Error("an address without a port was accepted")
	}
	if _, err := ClientTLS(filepath.Join(t.TempDir(), "missing.pem"), "", "", nil); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	c := newCA(t, "ca")
	cert, key := c.issue(t, dir, "gw", time.Now().Add(time.Hour))
	r, err := NewCertReloader(cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Certificate()
	c.issue(t, dir, "gw", time.Now().Add(2*time.Hour)) // same paths, new pair
	later := time.Now().Add(time.Minute)
	os.Chtimes(cert, later, later)
	os.Chtimes(key, later, later)
	r.recheck()
	after, _ := r.Certificate()
	if bytes.Equal(before.Certificate[0], after.Certificate[0]) {
		t.Fatal("the renewed certificate was not loaded")
	}
	write(t, cert, []byte("garbage"))
	os.Chtimes(cert, later.Add(time.Minute), later.Add(time.Minute))
	r.recheck()
	kept, _ := r.Certificate()
	if !bytes.Equal(kept.Certificate[0], after.Certificate[0]) {
		t.Fatal("a broken file replaced the last good certificate")
	}
}

// A peer that connects and then neither reads nor writes (or stops reading
// mid-session) loses its session to the keepalive: the gateway's ping goes
// unanswered within WriteTimeout.
func TestSilentPeerIsDropped(t *testing.T) {
	s, addr := startServer(t, ServerConfig{Insecure: true, Limits: Limits{KeepAlive: 100 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitSession(t, s, 1)
	waitSession(t, s, 0)
}
