package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countConns counts the connections a test server accepts.
func countConns(srv *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func do(t *testing.T, c *Client, req *Request) (int, Header, string) {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Header, string(b)
}

func TestFramingAndReuse(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/v1/sized":
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+4))
			w.Write([]byte("got:"))
			w.Write(body)
		case "/v1/chunked":
			w.Header().Set("X-Kind", "chunked")
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/v1/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/v1/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		default:
			http.NotFound(w, r)
		}
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c, err := New(srv.URL+"/v1/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	cases := []struct {
		name, path string
		body       []byte
		status     int
		want       string
	}{
		{"content-length", "/sized", []byte("hello"), 200, "got:hello"},
		{"chunked", "/chunked", nil, 200, "part0;part1;part2;"},
		{"no content", "/empty", nil, 204, ""},
		{"not found", "/missing?x=1", nil, 404, "404 page not found\n"},
		{"empty body post", "/sized", []byte{}, 200, "got:"},
	}
	for round := range 3 {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%d", tc.name, round), func(t *testing.T) {
				status, _, got := do(t, c, &Request{Method: "POST", Path: tc.path, Body: tc.body,
					Header: []Field{{"Content-Type", "text/plain"}}})
				if status != tc.status || got != tc.want {
					t.Fatalf("got %d %q, want %d %q", status, got, tc.status, tc.want)
				}
			})
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1 (kept alive)", n)
	}
	// Connection: close is honoured.
	for range 2 {
		if _, _, got := do(t, c, &Request{Method: "GET", Path: "/close"}); got != "bye" {
			t.Fatalf("got %q", got)
		}
	}
	do(t, c, &Request{Method: "GET", Path: "/empty"})
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections after two Connection: close answers and one more request, want 3", n)
	}
}

func TestEarlyCloseDropsConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 100<<10)))
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	defer c.Close()
	for range 2 {
		resp, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		var one [1]byte
		resp.Body.Read(one[:])
		resp.Body.Close()
		if _, err := resp.Body.Read(one[:]); !errors.Is(err, ErrBodyClosed) {
			t.Fatalf("read after close: %v", err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a body closed early costs its connection)", n)
	}
}

func TestCancelUnblocksBodyRead(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c, _ := New(srv.URL, Options{})
	defer c.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	resp, err := c.Do(ctx, &Request{Method: "GET", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.Peek(5); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := io.ReadAll(br); errc <- err }()
	cause := errors.New("caller gave up")
	cancel(cause)
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("read succeeded after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not unblock the body read")
	}
}

func TestCancelBeforeResponse(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	c, _ := New(srv.URL, Options{})
	defer c.Close()
	cause := errors.New("deadline of the task")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
	_, err := c.Do(ctx, &Request{Method: "POST", Path: "/", Body: []byte("{}")})
	if !errors.Is(err, cause) {
		t.Fatalf("err = %v, want the context's cause", err)
	}
}

// TestRetryOnServerClosedIdle: a server that closed an idle keep-alive
// connection (the request never read) gets the request again on a fresh one.
func TestRetryOnServerClosedIdle(t *testing.T) {
	var served atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	defer c.Close()
	do(t, c, &Request{Method: "POST", Path: "/", Body: []byte("a")})
	srv.CloseClientConnections() // the pooled connection is now dead
	time.Sleep(20 * time.Millisecond)
	if _, _, got := do(t, c, &Request{Method: "POST", Path: "/", Body: []byte("b")}); got != "ok" {
		t.Fatalf("got %q", got)
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("served %d, want 2", n)
	}
}

// rawServer answers every connection with the given bytes.
func rawServer(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				nc.Write([]byte(answer))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestMalformedResponses(t *testing.T) {
	cases := []struct{ name, answer, want string }{
		{"garbage status", "HTTX/1.1 200 OK\r\n\r\n", "malformed status line"},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", "malformed status code"},
		{"header without colon", "HTTP/1.1 200 OK\r\nBroken\r\n\r\n", "malformed header"},
		{"huge header line", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", "too large"},
		{"too many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: "+strings.Repeat("b", 1000)+"\r\n", 80) + "\r\n", "too large"},
		{"conflicting length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", "conflicting"},
		{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"},
		{"gzip encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"},
		{"closed early", "HTTP/1.1 20", "unexpected EOF"},
		{"nothing", "", "closed before a response"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := New(rawServer(t, tc.answer), Options{})
			defer c.Close()
			_, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTruncatedBodies(t *testing.T) {
	cases := []struct{ name, answer string }{
		{"short content-length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"},
		{"chunk cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := New(rawServer(t, tc.answer), Options{})
			defer c.Close()
			resp, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/"})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("a truncated body read without error")
			}
		})
	}
}

func TestCloseDelimitedAndHTTP10(t *testing.T) {
	c, _ := New(rawServer(t, "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end"), Options{})
	defer c.Close()
	status, h, got := do(t, c, &Request{Method: "GET", Path: "/"})
	if status != 200 || got != "until the end" || h.Get("X-A") != "1" {
		t.Fatalf("got %d %q %v", status, got, h)
	}
}

func TestRefusesBadRequests(t *testing.T) {
	c, _ := New("http://127.0.0.1:1", Options{})
	for _, req := range []*Request{
		{Method: "", Path: "/"},
		{Method: "GET", Path: "no-slash"},
		{Method: "GET", Path: "/a b"},
		{Method: "GET", Path: "/", Header: []Field{{"X-Evil", "a\r\nInjected: 1"}}},
		{Method: "GET", Path: "/", Header: []Field{{"Bad Name", "v"}}},
	} {
		if _, err := c.Do(context.Background(), req); err == nil || !strings.Contains(err.Error(), "h1: bad") {
			t.Errorf("%+v: err = %v", req, err)
		}
	}
	for _, base := range []string{"ftp://x", "http://", "http://u@h:1", "http://h/?q=1", "::"} {
		if _, err := New(base, Options{}); err == nil {
			t.Errorf("New(%q) accepted", base)
		}
	}
	c.Close()
	if _, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("secure " + r.Host))
	}))
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c, err := New(srv.URL, Options{TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, got := do(t, c, &Request{Method: "GET", Path: "/"}); !strings.HasPrefix(got, "secure 127.0.0.1:") {
		t.Fatalf("got %q", got)
	}
	// Without the test CA the handshake fails.
	bad, _ := New(srv.URL, Options{})
	if _, err := bad.Do(context.Background(), &Request{Method: "GET", Path: "/"}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{MaxIdle: 4})
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				want := fmt.Sprintf("%d-%d", i, j)
				resp, err := c.Do(context.Background(), &Request{Method: "POST", Path: "/", Body: []byte(want)})
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					t.Errorf("got %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	if idle > 4 {
		t.Fatalf("%d idle connections kept, want at most 4", idle)
	}
}

func TestAbort(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("x"))
		if r.URL.Path == "/hang" {
			w.(http.Flusher).Flush()
			<-release
		}
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	defer close(release)
	c, _ := New(srv.URL, Options{})
	defer c.Close()

	// Abort unblocks a read in flight; the connection is dropped.
	resp, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/hang"})
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, resp.Abort)
	if _, err := resp.Body.Read(one[:]); err == nil {
		t.Fatal("read after Abort succeeded")
	}
	resp.Body.Close()

	// Abort after the end does nothing: the connection is reused.
	for range 2 {
		resp, err := c.Do(context.Background(), &Request{Method: "GET", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Abort()
		resp.Body.Close()
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the aborted one, then one reused)", n)
	}
}

// TestLongHeaderLine: a header line longer than the read buffer is
// assembled, within MaxHeaderBytes.
func TestLongHeaderLine(t *testing.T) {
	long := strings.Repeat("v", 10<<10)
	c, _ := New(rawServer(t, "HTTP/1.1 200 OK\r\nX-Long: "+long+"\r\nContent-Length: 2\r\n\r\nok"), Options{})
	defer c.Close()
	status, h, got := do(t, c, &Request{Method: "GET", Path: "/"})
	if status != 200 || got != "ok" || h.Get("x-long") != long {
		t.Fatalf("got %d %q, header of %d bytes", status, got, len(h.Get("X-Long")))
	}
}

// Options.Dial replaces the TCP dial: the base URL's host only names the
// Host header, and a dial error is the request's error.
func TestDialOverride(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("via " + r.Host))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var dials atomic.Int32
	c, err := New("http://worker-link.invalid", Options{Dial: func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if _, _, got := do(t, c, &Request{Method: "GET", Path: "/"}); got != "via worker-link.invalid" {
			t.Fatalf("got %q", got)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("dialled %d times, want 1 (the connection is reused)", n)
	}
	refused := errors.New("link down")
	down, _ := New("http://worker-link.invalid", Options{Dial: func(context.Context) (net.Conn, error) { return nil, refused }})
	if _, err := down.Do(context.Background(), &Request{Method: "GET", Path: "/"}); !errors.Is(err, refused) {
		t.Fatalf("err = %v, want the dial's error", err)
	}
}
