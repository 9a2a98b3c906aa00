package workerlink

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startRegisteringServer is startServer whose gateway side marks worker W
// registered on the session on GET /register/W, as the gateway's
// registration does.
func startRegisteringServer(t *testing.T, cfg ServerConfig) (*Server, string) {
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
		st := r.Context().Value(connKey{}).(*Stream)
		if w, ok := strings.CutPrefix(r.URL.Path, "/register/"); ok {
			st.MarkRegistered(w)
		}
		io.WriteString(w, st.LinkSession())
	}), ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	go hs.Serve(s.Streams())
	t.Cleanup(func() { s.Close(); hs.Close() })
	return s, ln.Addr().String()
}

func call(ctx context.Context, d *Dialer, path string) (string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://link"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Attack: without mutual TLS a session needs no credentials, so one host
// that opens MaxSessions connections and never registers a worker (or
// never finishes its TLS handshake, re-opening each every
// HandshakeTimeout) held every session slot, and no worker could dial in.
// Sessions not yet registered are capped per host and overall, apart from
// the registered ones, and closed when no worker registers in time.
func TestUnregisteredSessionsCannotFillSlots(t *testing.T) {
	var gwLog syncBuffer
	s, addr := startRegisteringServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog),
		Limits: Limits{MaxSessions: 8, MaxPending: 4, MaxPendingPerHost: 2, RegisterTimeout: 500 * time.Millisecond}})
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	lim := Limits{}
	lim.setDefaults()
	for i := 0; i < 20; i++ {
		c, err := attacker.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := yamuxClient(c, lim); err != nil { // answers pings, never registers
			t.Fatal(err)
		}
	}
	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true, MaxBackoff: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := call(ctx, d, "/register/w1")
	if err != nil {
		t.Fatalf("an honest worker could not dial in past the idle sessions: %v\n%s", err, gwLog.String())
	}
	if !strings.Contains(gwLog.String(), "too many sessions not yet registered from this host") {
		t.Errorf("the refusals were not logged:\n%s", gwLog.String())
	}
	// The attacker's sessions go at the deadline; the registered one stays.
	deadline := time.Now().Add(10 * time.Second)
	for s.Sessions() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Sessions(); n != 1 {
		t.Fatalf("%d sessions after the register deadline, want the registered one", n)
	}
	time.Sleep(time.Second) // past its own deadline
	if got, err := call(ctx, d, "/session"); err != nil || got != id {
		t.Fatalf("the registered session was closed: %q, %v", got, err)
	}
	if !strings.Contains(gwLog.String(), "no worker registered") {
		t.Errorf("the deadline was not logged:\n%s", gwLog.String())
	}
}

// Attack: a peer that connects in a loop and sends garbage instead of a
// TLS handshake wrote one warning per connection into the gateway's log,
// as fast as it could connect. Refusals are logged once a second each,
// with a count of those left out.
func TestRefusalFloodDoesNotFloodTheLog(t *testing.T) {
	cfg, err := selfSigned(t)
	if err != nil {
		t.Fatal(err)
	}
	var gwLog syncBuffer
	_, addr := startServer(t, ServerConfig{TLS: cfg, Logger: logger(&gwLog)})
	const conns = 300
	start := time.Now()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1)) // until the gateway drops it
		c.Close()
	}
	lines := strings.Count(gwLog.String(), "TLS handshake failed")
	if max := int(time.Since(start)/refusalEvery) + 2; lines == 0 || lines > max {
		t.Fatalf("%d refusals logged %d lines over %v (want 1..%d)", conns, lines, time.Since(start), max)
	}
}

// Attack: one worker key (one provider credential) registers on one
// session after another. Each registered session kept its slot for good,
// though the gateway routes the worker only to the last, so one key could
// hold every session slot. A session left with no worker registered on it
// is closed; one with another worker still on it stays.
func TestOneWorkerCannotHoldManySessions(t *testing.T) {
	var gwLog syncBuffer
	s, addr := startRegisteringServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shared := startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	for _, w := range []string{"w-a", "w-b"} { // two workers on one session
		if _, err := call(ctx, shared, "/register/"+w); err != nil {
			t.Fatal(err)
		}
	}
	var last string
	for i := 0; i < 5; i++ {
		d := startDialer(t, DialerConfig{Addr: addr, Insecure: true, MinBackoff: time.Hour})
		id, err := call(ctx, d, "/register/w1")
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	moved := startDialer(t, DialerConfig{Addr: addr, Insecure: true, MinBackoff: time.Hour})
	if _, err := call(ctx, moved, "/register/w-a"); err != nil { // w-b stays on the shared session
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Sessions() != 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Sessions(); n != 3 {
		t.Fatalf("%d sessions, want 3 (w1's last, w-a's new, the one w-b is still on)", n)
	}
	if got, err := call(ctx, shared, "/session"); err != nil || got == last {
		t.Fatalf("the session w-b is on was closed: %q, %v", got, err)
	}
	if !strings.Contains(gwLog.String(), "registered on another link") {
		t.Errorf("the close was not logged:\n%s", gwLog.String())
	}
}

// Attack: a peer with no credentials (no worker registered on its session
// yet) opened MaxStreamsPerSession streams, each of which may buffer a
// window (256 KiB) on the gateway: 16 MiB a session, for each of the
// pending sessions. Until a worker registers, a session holds at most
// pendingMaxStreams; after, the full cap.
func TestUnregisteredSessionStreamsCapped(t *testing.T) {
	const max = 12
	var gwLog syncBuffer
	s, addr := startRegisteringServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog), Limits: Limits{MaxStreamsPerSession: max}})
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
	for i := 0; i < pendingMaxStreams+1; i++ {
		st, err := attacker.Open()
		if err != nil {
			break
		}
		st.Write([]byte("GET /session HTTP/1.1\r\n")) // never finished
	}
	select {
	case <-attacker.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatalf("an unregistered session held %d streams", attacker.NumStreams())
	}

	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := call(ctx, d, "/register/w1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < max-2; i++ {
		st, err := d.DialContext(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.Write([]byte("GET /session HTTP/1.1\r\n"))
	}
	if got, err := call(ctx, d, "/session"); err != nil || got != id {
		t.Fatalf("a registered worker holding %d streams lost its session: %q, %v\n%s", max-1, got, err, gwLog.String())
	}
	if s.Sessions() != 1 {
		t.Fatalf("%d sessions", s.Sessions())
	}
}
