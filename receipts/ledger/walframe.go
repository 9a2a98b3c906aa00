package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A write-ahead log frame is one acknowledged Append:
//
//	length  uint32  payload bytes
//	crc     uint32  CRC-32C (Castagnoli) of the rest of the header and the payload
//	seq     uint64  Seq of the frame's first entry
//	count   uint32  entries in the frame
//	group   uint64  seq of the first frame of its commit group
//	payload         the request's entries as a JSON array (Seq, SubjectSeq set)
//
// all little-endian. One frame per request keeps a request atomic across a
// crash: a torn write loses whole requests, never part of one.
//
// The log is written from offset 0 and, once bbolt holds everything in it,
// written from 0 again over the old frames (no truncation, so a sync never
// waits for the file's size to change). Its end is therefore the first
// frame that is not the intact successor of the one before: a stale frame
// (lower seq), zeros, or a torn write. What tells a torn write from damage
// is the group: the committer writes group g+1 only after g's sync
// returned and g was acknowledged, so an intact frame of a later group
// after a bad frame proves the bad frame was acknowledged and damaged
// since.

const (
	frameHeader = 28
	// maxFramePayload bounds a frame's length field, so a corrupt one
	// cannot make the decoder allocate or skip gigabytes.
	maxFramePayload = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxPlausibleSeq bounds the seqs a frame can carry (2^48: 8,900 years at
// a million receipts a second).
const maxPlausibleSeq = 1 << 48

// minEntryBytes is less than any entry's JSON takes in a frame (an entry
// carries its receipt and request IDs and two 64-digit digests).
const minEntryBytes = 64

// ErrCorruptLog is returned on open when the write-ahead log has a frame
// that fails its checksum with an intact frame of a later commit group
// after it: that is damage, not a torn final write, and truncating there
// would drop acknowledged receipts, so the ledger refuses to open.
var ErrCorruptLog = errors.New("ledger: write-ahead log is corrupt")

// frame is one decoded log frame.
type frame struct {
	seq     uint64
	count   uint32
	group   uint64
	payload []byte
}

// appendFrame appends f as one frame to dst.
func appendFrame(dst []byte, f frame) []byte {
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(f.payload)))
	binary.LittleEndian.PutUint64(h[8:], f.seq)
	binary.LittleEndian.PutUint32(h[16:], f.count)
	binary.LittleEndian.PutUint64(h[20:], f.group)
	crc := crc32.Update(crc32.Checksum(h[8:], castagnoli), castagnoli, f.payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	return append(append(dst, h[:]...), f.payload...)
}

// readFrame decodes the frame at the start of b, or ok false if b does not
// start with an intact frame (too short, an empty or oversized length, a
// checksum mismatch). minGroup > 0 skips, before the checksum, frames of
// an earlier group.
func readFrame(b []byte, minGroup, maxSeq uint64) (f frame, n int, ok bool) {
	if len(b) < frameHeader {
		return frame{}, 0, false
	}
	size := binary.LittleEndian.Uint32(b[0:])
	if size == 0 || size > maxFramePayload || uint64(len(b)-frameHeader) < uint64(size) {
		return frame{}, 0, false
	}
	f = frame{seq: binary.LittleEndian.Uint64(b[8:]), count: binary.LittleEndian.Uint32(b[16:]),
		group: binary.LittleEndian.Uint64(b[20:]), payload: b[frameHeader : frameHeader+int(size)]}
	if minGroup > 0 && !plausibleLater(f, minGroup, maxSeq) {
		// The search for a later group (laterGroupFrame) tries every
		// offset of what follows a bad frame, mostly stale frames' JSON:
		// a header read from there has a seq and group of ASCII bytes
		// (≥ 2^61), far past any real one, and is dropped here, before a
		// checksum over up to maxFramePayload bytes. So is one read a byte
		// or so off a real header (its fields shifted: seqs ×256); maxSeq
		// is the highest seq a real frame at that offset could carry.
		return frame{}, 0, false
	}
	crc := crc32.Update(crc32.Checksum(b[8:frameHeader], castagnoli), castagnoli, f.payload)
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return frame{}, 0, false
	}
	return f, frameHeader + int(size), true
}

// plausibleLater reports whether a header could be a real frame of a group
// from minGroup on carrying seqs up to maxSeq (see readFrame).
func plausibleLater(f frame, minGroup, maxSeq uint64) bool {
	return f.group >= minGroup && f.group <= f.seq && f.count > 0 && f.seq < maxPlausibleSeq && f.seq <= maxSeq
}

// scanFrames decodes a log: its frames in order, up to the end described
// above, and the offset of that end. minSeq is the first Seq bbolt does
// not hold. A bad frame followed by an intact frame of a later commit
// group (one that began past the bad frame's seq) is ErrCorruptLog; so is
// an intact frame that skips seqs.
func scanFrames(log []byte, minSeq uint64) (frames []frame, end int, err error) {
	var next uint64 // seq the next frame must start at; 0 until the first
	for end < len(log) {
		f, n, ok := readFrame(log[end:], 0, 0)
		switch {
		case ok && (next == 0 || f.seq == next) && f.count > 0:
			frames = append(frames, f)
			next = f.seq + uint64(f.count)
			end += n
			continue
		case ok && next != 0 && f.seq < next:
			return frames, end, nil // a frame from before the log was rewound
		case ok && next != 0:
			return frames, end, fmt.Errorf("%w: frame at offset %d starts at seq %d, want %d", ErrCorruptLog, end, f.seq, next)
		}
		expect := next
		if expect == 0 {
			expect = minSeq
		}
		if at, found := laterGroupFrame(log, end+1, expect); found {
			return frames, end, fmt.Errorf("%w: bad frame at offset %d (seq %d), intact frame of a later commit group at offset %d",
				ErrCorruptLog, end, expect, at)
		}
		return frames, end, nil
	}
	return frames, end, nil
}

// laterGroupFrame looks for an intact frame of a group that began after
// seq, at any offset from `from` on. Only a log that already ended is
// scanned (a crash left it, or it holds stale frames).
func laterGroupFrame(log []byte, from int, seq uint64) (int, bool) {
	for i := from; i+frameHeader < len(log); i++ {
		// Every seq between the bad frame and a later group's frame is in
		// a frame in between, each entry at least minEntryBytes of JSON.
		maxSeq := seq + uint64(i-from)/minEntryBytes + 1
		if _, _, ok := readFrame(log[i:], seq+1, maxSeq); ok {
			return i, true
		}
	}
	return 0, false
}
