package workerlink

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// maxUnansweredPings bounds the peer's ping queries whose replies are not
// yet written. yamux (v0.1.2) answers each ping on a goroutine of its own
// that waits for the send queue, so a peer that floods pings and never
// reads the replies would grow the gateway's goroutines without bound. An
// honest peer has one ping out per keepalive interval.
const maxUnansweredPings = 64

// errPingFlood ends a session whose peer went over maxUnansweredPings.
var errPingFlood = errors.New("workerlink: peer flooded pings without reading the replies")

// yamux frame fields (github.com/hashicorp/yamux const.go).
const (
	frameHeaderSize = 12
	frameTypeData   = 0
	frameTypePing   = 2
	frameFlagSYN    = 1
	frameFlagACK    = 2
)

// pingGuard is the session's connection with the peer's ping queries
// counted against the replies written; a Read that finds more than
// maxUnansweredPings outstanding fails, which ends the session.
type pingGuard struct {
	net.Conn
	unanswered atomic.Int64
	flooded    atomic.Bool

	inMu, outMu sync.Mutex
	in, out     frameScanner
}

func (g *pingGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	g.inMu.Lock()
	g.in.scan(p[:n], func(typ uint8, flags uint16) {
		if typ == frameTypePing && flags&frameFlagSYN != 0 {
			g.unanswered.Add(1)
		}
	})
	g.inMu.Unlock()
	if g.unanswered.Load() > maxUnansweredPings {
		g.flooded.Store(true)
		return 0, errPingFlood
	}
	return n, err
}

func (g *pingGuard) Write(p []byte) (int, error) {
	g.outMu.Lock()
	g.out.scan(p, func(typ uint8, flags uint16) {
		if typ == frameTypePing && flags&frameFlagACK != 0 {
			g.unanswered.Add(-1)
		}
	})
	g.outMu.Unlock()
	return g.Conn.Write(p)
}

// frameScanner follows the yamux frames of one direction of a connection
// across arbitrary read and write boundaries.
type frameScanner struct {
	hdr  [frameHeaderSize]byte
	held int    // header bytes held
	skip uint32 // data payload bytes still to pass
}

// scan calls frame with the type and flags of each header completed in p.
func (f *frameScanner) scan(p []byte, frame func(typ uint8, flags uint16)) {
	for len(p) > 0 {
		if f.skip > 0 {
			k := uint32(min(len(p), int(min(f.skip, 1<<30))))
			p, f.skip = p[k:], f.skip-k
			continue
		}
		k := copy(f.hdr[f.held:], p)
		p, f.held = p[k:], f.held+k
		if f.held < frameHeaderSize {
			return
		}
		f.held = 0
		typ := f.hdr[1]
		if typ == frameTypeData {
			f.skip = binary.BigEndian.Uint32(f.hdr[8:])
		}
		frame(typ, binary.BigEndian.Uint16(f.hdr[2:]))
	}
}
