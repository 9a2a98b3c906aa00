package workerlink

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// maxUnansweredPings bounds the peer's ping queries whose replies are not
// yet written. yamux (v0.1.2) answers each ping on a goroutine of its own
// that waits for the send queue, so a peer that floods pings and never
// reads the replies would grow the gateway's goroutines without bound. An
// honest peer has one ping out per keepalive interval.
const maxUnansweredPings = 64

// errPingFlood ends a session whose peer went over maxUnansweredPings.
var errPingFlood = errors.New("workerlink: peer flooded pings without reading the replies")

// errTooManyStreams ends a session whose peer opened more streams than its
// cap.
var errTooManyStreams = errors.New("workerlink: peer opened too many streams")

// errUnsolicited ends a session whose peer sent data on a stream this side
// has parked idle (no request in flight on it).
var errUnsolicited = errors.New("workerlink: peer sent data on an idle stream")

// yamux frame fields (github.com/hashicorp/yamux const.go).
const (
	frameHeaderSize       = 12
	frameTypeData         = 0
	frameTypeWindowUpdate = 1
	frameTypePing         = 2
	frameFlagSYN          = 1
	frameFlagACK          = 2
	frameFlagFIN          = 4
	frameFlagRST          = 8
)

// linkGuard is a session's connection, with what the peer does on it
// followed frame by frame:
//
//   - the peer's ping queries are counted against the replies written; a
//     Read that finds more than maxUnansweredPings outstanding fails;
//   - the streams the peer opened (a SYN it sent) are counted until yamux
//     lets them go (a FIN each way, or a reset either way); a Read that
//     finds more than maxStreams fails. The streams this side opens are
//     not the peer's to answer for;
//   - a data frame with a payload on a stream this side marked idle
//     (setIdle: parked in its HTTP client's pool, no request in flight)
//     fails the Read: the peer answers no request there, and yamux would
//     buffer up to a window of it per idle stream.
//
// A failed Read ends the session; report is told once, first, which limit
// the peer went over.
type linkGuard struct {
	net.Conn
	report func(error)

	mu         sync.Mutex
	maxStreams int
	in, out    frameScanner
	unanswered int              // peer's pings not yet answered
	peerOpen   map[uint32]uint8 // peer-opened stream → FIN flags seen (finIn, finOut)
	idle       map[uint32]bool  // this side's streams parked idle
	abuse      error
}

const (
	finIn  = 1
	finOut = 2
)

func newLinkGuard(c net.Conn, maxStreams int, report func(error)) *linkGuard {
	return &linkGuard{Conn: c, maxStreams: maxStreams, report: report, peerOpen: map[uint32]uint8{}, idle: map[uint32]bool{}}
}

func (g *linkGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	abuse, first := g.check(p[:n])
	g.mu.Unlock()
	if abuse != nil {
		if first {
			g.report(abuse)
		}
		return 0, abuse
	}
	return n, err
}

// check follows the frames in p and returns the limit the peer is over,
// and whether it is the first time. g.mu is held.
func (g *linkGuard) check(p []byte) (error, bool) {
	if g.abuse != nil {
		return g.abuse, false
	}
	unsolicited := false
	g.in.scan(p, func(typ uint8, flags uint16, id, length uint32) {
		switch {
		case typ == frameTypeData && length > 0 && g.idle[id]:
			unsolicited = true
		}
		switch {
		case typ == frameTypePing && flags&frameFlagSYN != 0:
			g.unanswered++
		case typ == frameTypeData || typ == frameTypeWindowUpdate:
			if flags&frameFlagSYN != 0 {
				if _, ok := g.peerOpen[id]; !ok {
					g.peerOpen[id] = 0
				}
			}
			g.streamFlags(id, flags, finIn)
		}
	})
	switch {
	case unsolicited:
		g.abuse = errUnsolicited
	case g.unanswered > maxUnansweredPings:
		g.abuse = errPingFlood
	case len(g.peerOpen) > g.maxStreams:
		g.abuse = errTooManyStreams
	}
	return g.abuse, g.abuse != nil
}

func (g *linkGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.out.scan(p, func(typ uint8, flags uint16, id, _ uint32) {
		switch {
		case typ == frameTypePing && flags&frameFlagACK != 0:
			g.unanswered--
		case typ == frameTypeData || typ == frameTypeWindowUpdate:
			g.streamFlags(id, flags, finOut)
		}
	})
	g.mu.Unlock()
	return g.Conn.Write(p)
}

// streamFlags follows a peer-opened stream's closing: yamux drops it on a
// reset either way or once both sides sent a FIN (its close timeout sends a
// reset). g.mu is held.
func (g *linkGuard) streamFlags(id uint32, flags uint16, fin uint8) {
	seen, ok := g.peerOpen[id]
	if !ok {
		return
	}
	if flags&frameFlagFIN != 0 {
		seen |= fin
	}
	if flags&frameFlagRST != 0 || seen == finIn|finOut {
		delete(g.peerOpen, id)
		return
	}
	g.peerOpen[id] = seen
}

// frameScanner follows the yamux frames of one direction of a connection
// across arbitrary read and write boundaries.
type frameScanner struct {
	hdr  [frameHeaderSize]byte
	held int    // header bytes held
	skip uint32 // data payload bytes still to pass
}

// scan calls frame with the type, flags, stream and length field of each
// header completed in p.
func (f *frameScanner) scan(p []byte, frame func(typ uint8, flags uint16, id, length uint32)) {
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
		frame(typ, binary.BigEndian.Uint16(f.hdr[2:]), binary.BigEndian.Uint32(f.hdr[4:]), binary.BigEndian.Uint32(f.hdr[8:]))
	}
}

// setIdle marks a stream this side opened as parked idle, or not (taken
// out for a request, or closed).
func (g *linkGuard) setIdle(id uint32, idle bool) {
	g.mu.Lock()
	if idle {
		g.idle[id] = true
	} else {
		delete(g.idle, id)
	}
	g.mu.Unlock()
}

// setMaxStreams changes the cap on the streams the peer may hold (a
// session that registered a worker gets the full one).
func (g *linkGuard) setMaxStreams(n int) {
	g.mu.Lock()
	g.maxStreams = n
	g.mu.Unlock()
}
