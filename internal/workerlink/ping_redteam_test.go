package workerlink

import (
	"encoding/binary"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// smallBufListener shrinks each accepted connection's send buffer: a worker
// on a slow uplink, whose gateway-side writes back up after a few KiB.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// Attack: a peer that completed the handshake (no credentials needed
// without mutual TLS) floods yamux pings and never reads the replies.
// yamux v0.1.2 answers each ping on a goroutine of its own that waits up
// to the write timeout for the send queue, so the gateway's goroutines (and
// memory) grow with the pings sent. The gateway must close such a session
// and hold its goroutines to a bound.
func TestPingFloodIsBounded(t *testing.T) {
	var gwLog syncBuffer
	s, err := NewServer(ServerConfig{Insecure: true, Logger: logger(&gwLog)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(smallBufListener{ln})
	t.Cleanup(func() { s.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096) // never read: the replies back up
	waitSession(t, s, 1)
	base := runtime.NumGoroutine()

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	const pings, perWrite = 50000, 1000
	frame := make([]byte, 12*perWrite)
	for sent := 0; sent < pings; sent += perWrite {
		for i := 0; i < perWrite; i++ {
			h := frame[12*i : 12*i+12]
			h[0], h[1] = 0, 2                    // version 0, typePing
			binary.BigEndian.PutUint16(h[2:], 1) // flagSYN: a ping query
			binary.BigEndian.PutUint32(h[4:], 0) // stream 0
			binary.BigEndian.PutUint32(h[8:], uint32(sent+i))
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(frame); err != nil {
			break // the gateway closed the session: what we want
		}
	}
	time.Sleep(200 * time.Millisecond) // let the last pings be read
	close(stop)
	<-sampled
	if extra := peak.Load() - int64(base); extra > 2000 {
		t.Fatalf("a ping flood of %d raised the gateway's goroutines by %d", pings, extra)
	}
	waitSession(t, s, 0)
	if !strings.Contains(gwLog.String(), "ping") {
		t.Fatalf("the flood was not logged:\n%s", gwLog.String())
	}
}

// A data payload that looks like a ping query is not counted as one, at
// any split of the stream.
func TestFrameScannerSkipsPayloads(t *testing.T) {
	ping := []byte{0, frameTypePing, 0, frameFlagSYN, 0, 0, 0, 0, 0, 0, 0, 7}
	data := []byte{0, frameTypeData, 0, 0, 0, 0, 0, 1, 0, 0, 0, byte(len(ping))}
	stream := append(append(append([]byte{}, data...), ping...), ping...)
	for chunk := 1; chunk <= len(stream); chunk++ {
		var f frameScanner
		pings := 0
		for p := stream; len(p) > 0; {
			k := min(chunk, len(p))
			f.scan(p[:k], func(typ uint8, flags uint16, _, _ uint32) {
				if typ == frameTypePing && flags&frameFlagSYN != 0 {
					pings++
				}
			})
			p = p[k:]
		}
		if pings != 1 {
			t.Fatalf("chunks of %d: %d pings counted, want 1", chunk, pings)
		}
	}
}
