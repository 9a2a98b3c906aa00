// Package wal is the frame format and file discipline shared by
// Tollgate's write-ahead logs (the gateway's receipt ledger and the
// worker's record store): frames with a CRC-32C, the rule that finds a
// log's end after a crash, and a log file synced with fdatasync.
//
// A frame is one acknowledged write:
//
//	length  uint32  payload bytes
//	crc     uint32  CRC-32C (Castagnoli) of the rest of the header and the payload
//	seq     uint64  seq of the frame's first entry
//	count   uint32  entries in the frame
//	group   uint64  seq of the first frame of its commit group
//	payload         the entries, in the writer's own encoding
//
// all little-endian. One frame per acknowledged write keeps it atomic
// across a crash: a torn write loses whole writes, never part of one.
//
// A log is written from offset 0 and, once its reader's store holds
// everything in it, written from 0 again over the old frames (no
// truncation, so a sync never waits for the file's size to change). Its
// end is therefore the first frame that is not the intact successor of
// the one before: a stale frame (lower seq), zeros, or a torn write. What
// tells a torn write from damage is the group: a writer writes group g+1
// only after g's sync returned and g was acknowledged, so an intact frame
// of a later group after a bad frame proves the bad frame was
// acknowledged and damaged since.
package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

const (
	// HeaderSize is a frame's header: length, crc, seq, count, group.
	HeaderSize = 28
	// MaxPayload bounds a frame's length field, so a corrupt one cannot
	// make the decoder allocate or skip gigabytes.
	MaxPayload = 64 << 20
	// MinEntryBytes is less than any entry takes in a log, its share of
	// its frame's header included. Writers must keep to it: the search
	// for damage (see Scan) bounds the seqs a frame at some offset can
	// carry by it.
	MinEntryBytes = 64
)

// maxPlausibleSeq bounds the seqs a frame can carry (2^48: 8,900 years at
// a million entries a second).
const maxPlausibleSeq = 1 << 48

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is a log with a frame that fails its checksum and an intact
// frame of a later commit group after it, or an intact frame that skips
// seqs: damage, not a torn final write. Truncating there would drop
// acknowledged entries, so a store refuses to open.
var ErrCorrupt = errors.New("write-ahead log is corrupt")

// Frame is one decoded log frame.
type Frame struct {
	Seq     uint64
	Count   uint32
	Group   uint64
	Payload []byte
}

// AppendFrame appends f as one frame to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(f.Payload)))
	binary.LittleEndian.PutUint64(h[8:], f.Seq)
	binary.LittleEndian.PutUint32(h[16:], f.Count)
	binary.LittleEndian.PutUint64(h[20:], f.Group)
	crc := crc32.Update(crc32.Checksum(h[8:], castagnoli), castagnoli, f.Payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	return append(append(dst, h[:]...), f.Payload...)
}

// readFrame decodes the frame at the start of b, or ok false if b does not
// start with an intact frame (too short, an empty or oversized length, a
// checksum mismatch). minGroup > 0 skips, before the checksum, frames of
// an earlier group.
func readFrame(b []byte, minGroup, maxSeq uint64) (f Frame, n int, ok bool) {
	if len(b) < HeaderSize {
		return Frame{}, 0, false
	}
	size := binary.LittleEndian.Uint32(b[0:])
	if size == 0 || size > MaxPayload || uint64(len(b)-HeaderSize) < uint64(size) {
		return Frame{}, 0, false
	}
	f = Frame{Seq: binary.LittleEndian.Uint64(b[8:]), Count: binary.LittleEndian.Uint32(b[16:]),
		Group: binary.LittleEndian.Uint64(b[20:]), Payload: b[HeaderSize : HeaderSize+int(size)]}
	if minGroup > 0 && !PlausibleLater(f, minGroup, maxSeq) {
		// The search for a later group (laterGroupFrame) tries every
		// offset of what follows a bad frame, mostly stale frames'
		// payloads: a header read from there has a seq and group of
		// ASCII bytes (≥ 2^61), far past any real one, and is dropped
		// here, before a checksum over up to MaxPayload bytes. So is one
		// read a byte or so off a real header (its fields shifted: seqs
		// ×256); maxSeq is the highest seq a real frame at that offset
		// could carry.
		return Frame{}, 0, false
	}
	crc := crc32.Update(crc32.Checksum(b[8:HeaderSize], castagnoli), castagnoli, f.Payload)
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return Frame{}, 0, false
	}
	return f, HeaderSize + int(size), true
}

// PlausibleLater reports whether a header could be a real frame of a group
// from minGroup on carrying seqs up to maxSeq (the filter Scan's search
// for damage applies before a checksum).
func PlausibleLater(f Frame, minGroup, maxSeq uint64) bool {
	return f.Group >= minGroup && f.Group <= f.Seq && f.Count > 0 && f.Seq < maxPlausibleSeq && f.Seq <= maxSeq
}

// Scan decodes a log: its frames in order, up to the end described in the
// package doc, and the offset of that end. minSeq is the first seq the
// reader's store does not hold. A bad frame followed by an intact frame
// of a later commit group (one that began past the bad frame's seq) is
// ErrCorrupt; so is an intact frame that skips seqs.
func Scan(log []byte, minSeq uint64) (frames []Frame, end int, err error) {
	var next uint64 // seq the next frame must start at; 0 until the first
	for end < len(log) {
		f, n, ok := readFrame(log[end:], 0, 0)
		switch {
		case ok && (next == 0 || f.Seq == next) && f.Count > 0:
			frames = append(frames, f)
			next = f.Seq + uint64(f.Count)
			end += n
			continue
		case ok && next != 0 && f.Seq < next:
			return frames, end, nil // a frame from before the log was rewound
		case ok && next != 0:
			return frames, end, fmt.Errorf("%w: frame at offset %d starts at seq %d, want %d", ErrCorrupt, end, f.Seq, next)
		}
		expect := next
		if expect == 0 {
			expect = minSeq
		}
		if at, found := laterGroupFrame(log, end+1, expect); found {
			return frames, end, fmt.Errorf("%w: bad frame at offset %d (seq %d), intact frame of a later commit group at offset %d",
				ErrCorrupt, end, expect, at)
		}
		return frames, end, nil
	}
	return frames, end, nil
}

// laterGroupFrame looks for an intact frame of a group that began after
// seq, at any offset from `from` on. Only a log that already ended is
// scanned (a crash left it, or it holds stale frames).
func laterGroupFrame(log []byte, from int, seq uint64) (int, bool) {
	for i := from; i+HeaderSize < len(log); i++ {
		// No header is all zeros (its count is not 0): past a run of
		// zeros (a preallocated log's whole tail), the first offset that
		// could hold one is where its header reaches the next non-zero
		// byte.
		if log[i] == 0 {
			k := len(log) - len(bytes.TrimLeft(log[i:], "\x00"))
			if k == len(log) {
				return 0, false
			}
			i = max(i, k-HeaderSize+1)
			if i+HeaderSize >= len(log) {
				return 0, false
			}
		}
		// Every seq between the bad frame and a later group's frame is in
		// a frame in between, each entry at least MinEntryBytes.
		maxSeq := seq + uint64(i-from)/MinEntryBytes + 1
		if _, _, ok := readFrame(log[i:], seq+1, maxSeq); ok {
			return i, true
		}
	}
	return 0, false
}
