//go:build unix

package gateway

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/tollgate-ai/tollgate/internal/httpguard"
)

// watchClient calls gone (once, from another goroutine) if the client
// closes its connection while the handler is still working on its request
// — fasthttp offers no such signal: RequestCtx.Done is closed only at
// server shutdown. It peeks at the socket (MSG_PEEK, nothing is consumed)
// whenever it becomes readable: end of file or an error means the client
// is gone; data (a pipelined request) ends the watch without a verdict.
// Like net/http's background read, a client that half-closes its side
// after sending the request counts as gone.
//
// stop must be called before the handler returns (fasthttp's RequestCtx,
// and its connection, are then someone else's): it wakes the watcher with
// a read deadline in the past, waits for it to exit, and clears the
// deadline (fasthttp sets its own before it reads the next request).
// Connections that are not sockets (in-memory listeners, TLS without an
// underlying socket) are not watched.
func watchClient(conn net.Conn, gone func()) (stop func()) {
	// The API listener guards every connection (Server.Serve): the socket
	// is under the guard, which is not a syscall.Conn — unwrapped, or
	// no client's going away would ever be seen.
	conn = httpguard.Unwrap(conn)
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = httpguard.Unwrap(nc.NetConn()) // TLS: close_notify is data, which ends the watch; the FIN is not seen
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil || conn.SetReadDeadline(time.Time{}) != nil {
		return func() {}
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var b [1]byte
		closed := false
		err := raw.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
				return false // nothing yet: wait until readable
			case err != nil, n == 0:
				closed = true // reset, or end of file
			}
			return true
		})
		if closed && err == nil {
			gone()
		}
	}()
	return func() {
		_ = conn.SetReadDeadline(time.Unix(1, 0))
		<-exited
		_ = conn.SetReadDeadline(time.Time{})
	}
}
