package workerlink

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/h1"
)

// startRawWorker runs a worker's link whose streams are answered by
// handler, for workers that misbehave at the HTTP level.
func startRawWorker(t *testing.T, addr string, handler http.HandlerFunc) {
	t.Helper()
	d, err := NewDialer(DialerConfig{Addr: addr, Insecure: true, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	hs := &http.Server{Handler: handler}
	go hs.Serve(d)
	t.Cleanup(func() { cancel(); <-done; hs.Close() })
}

// gatewayClient is the gateway's pooled HTTP client over a session's
// streams, as workers.Client has it.
func gatewayClient(t *testing.T, s *Server, session string) *h1.Client {
	t.Helper()
	c, err := h1.New("http://"+session, h1.Options{MaxIdle: 8, Dial: func(ctx context.Context) (net.Conn, error) { return s.Dial(ctx, session) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func doGet(ctx context.Context, c *h1.Client) (string, error) {
	resp, err := c.Do(ctx, &h1.Request{Method: "GET", Path: "/"})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// A worker that writes on a stream after its response was read (the
// gateway parked the stream in its idle pool) has its session closed: the
// bytes answer no request, and yamux would buffer up to a window (256 KiB)
// of them per idle stream, which a worker with many idle streams could
// turn into the gateway's memory.
func TestUnsolicitedDataOnIdleStreamEndsSession(t *testing.T) {
	var gwLog syncBuffer
	s, addr := startServer(t, ServerConfig{Insecure: true, Logger: logger(&gwLog)})
	startRawWorker(t, addr, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		buf.Flush()
		time.Sleep(100 * time.Millisecond) // the gateway has read it and parked the stream
		conn.Write([]byte(strings.Repeat("x", 200<<10)))
		time.Sleep(time.Second)
		conn.Close()
	})
	session := waitSession(t, s, 1)
	c := gatewayClient(t, s, session)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if body, err := doGet(ctx, c); err != nil || body != "ok" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for s.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the session survived 200 KiB sent on an idle stream (%d sessions)", s.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(gwLog.String(), "sent data on an idle stream") {
		t.Errorf("gateway log lacks the reason:\n%s", gwLog.String())
	}
}

// An honest worker's streams go idle and are reused without tripping the
// guard, and a worker that sends extra bytes in the same write as its
// response has that stream closed (never pooled), its session kept.
func TestIdleStreamsReusedAndStrayBytesNotPooled(t *testing.T) {
	s, addr := startServer(t, ServerConfig{Insecure: true})
	var stray atomic.Bool
	startRawWorker(t, addr, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stray" {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			// Set before the bytes go out: the client may read them, and
			// check the flag, before this goroutine runs again.
			stray.Store(true)
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
			buf.Flush()
			time.Sleep(200 * time.Millisecond)
			conn.Close()
			return
		}
		io.WriteString(w, "ok")
	})
	session := waitSession(t, s, 1)
	c := gatewayClient(t, s, session)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 20 {
		if body, err := doGet(ctx, c); err != nil || body != "ok" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	resp, err := c.Do(ctx, &h1.Request{Method: "GET", Path: "/stray"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || !stray.Load() {
		t.Fatalf("stray response %q", b)
	}
	time.Sleep(300 * time.Millisecond)
	if body, err := doGet(ctx, c); err != nil || body != "ok" {
		t.Fatalf("after the stray bytes: %q, %v (the stream was pooled with them?)", body, err)
	}
	if s.Sessions() != 1 {
		t.Fatalf("%d sessions, want the honest session kept", s.Sessions())
	}
}
