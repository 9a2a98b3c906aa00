package workerlink

import (
	"context"
	"net"
	"testing"
	"time"
)

// Attack (on an honest worker): the gateway's own streams — batches in
// flight and the idle connections its pool keeps (up to 1024 a worker) —
// were counted against the worker's MaxStreamsPerSession, so after a
// burst of as many concurrent batches the worker's next heartbeat cost it
// its session. The cap is on the streams the worker opens.
func TestGatewayStreamsDoNotCountAgainstWorker(t *testing.T) {
	const max = 4
	s, addr := startServer(t, ServerConfig{Insecure: true, Limits: Limits{MaxStreamsPerSession: max}})
	d := startDialer(t, DialerConfig{Addr: addr, Insecure: true})
	id := waitSession(t, s, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var held []net.Conn
	for i := 0; i < 2*max; i++ {
		c, err := s.Dial(ctx, id)
		if err != nil {
			t.Fatalf("gateway stream %d: %v", i, err)
		}
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: w\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		held = append(held, c) // a pooled, idle connection
	}
	for i := 0; i < 3*max; i++ { // heartbeats, one stream each: closed ones are let go
		if got, err := get(ctx, d.DialContext); err != nil || got != id {
			t.Fatalf("heartbeat %d while the gateway holds %d streams: %q, %v", i, len(held), got, err)
		}
	}
	if s.Sessions() != 1 || waitSession(t, s, 1) != id {
		t.Fatal("the worker lost its session")
	}
	for _, c := range held {
		c.Close()
	}
}
