package httpguard

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// refusingServer accepts one guarded connection, reads its header block
// only (as a server refusing the body does), answers 413 and calls Close
// closes times. It returns the address and a channel closed once it has.
func refusingServer(t *testing.T, closes int) (string, <-chan struct{}) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(raw, Limits{})
	t.Cleanup(func() { ln.Close() })
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		c.Write([]byte("HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		for range closes {
			c.Close()
		}
	}()
	return raw.Addr().String(), served
}

// A server that answers before reading the whole body (413 for a body over
// its limit, a refusal) and closes must not lose that answer: closing a
// socket with the client's bytes unread makes the kernel send a reset,
// and the client then reads "connection reset by peer" instead of its 413
// (TestErrors/oversized_body failed this way in CI). The guarded
// connection closes lingering: write side first, the rest drained.
func TestCloseMidBodyKeepsTheAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request string
	}{
		{"content-length body", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n"},
		{"chunked body", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400000\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, served := refusingServer(t, 1)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The client sends its headers and the start of its body; the
			// server answers and closes; the client, like an SDK streaming a
			// body out, is still writing. Go's HTTP client (and others)
			// report a failed body write instead of the answer that came.
			if _, err := c.Write([]byte(tc.request + strings.Repeat("x", 16<<10))); err != nil {
				t.Fatal(err)
			}
			<-served
			time.Sleep(200 * time.Millisecond) // a reset, if one is sent, has arrived
			chunk := []byte(strings.Repeat("x", 64<<10))
			for i := range 4 {
				if _, err := c.Write(chunk); err != nil {
					t.Fatalf("body write %d after the answer: %v (the server reset the connection)", i, err)
				}
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			status, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.Contains(status, " 413 ") {
				t.Fatalf("client read %q, %v: the answer was lost", status, err)
			}
		})
	}
}

// A second Close (a server's shutdown closing a connection its serve loop
// closes too) does not cut the lingering close short.
func TestCloseTwiceStillLingers(t *testing.T) {
	addr, served := refusingServer(t, 2)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("x", 16<<10))); err != nil {
		t.Fatal(err)
	}
	<-served
	time.Sleep(200 * time.Millisecond)
	if _, err := c.Write([]byte(strings.Repeat("x", 64<<10))); err != nil {
		t.Fatalf("body write after a double Close: %v", err)
	}
}
