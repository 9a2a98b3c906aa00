package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A write-ahead log frame is one acknowledged Append: a 4-byte
// little-endian payload length, the payload's CRC-32C (Castagnoli, 4
// bytes, little-endian), then the payload (the request's entries as a
// JSON array, Seq and SubjectSeq set). One frame per request keeps a
// request atomic across a crash: a torn write loses whole requests, never
// part of one.

const (
	frameHeader = 8
	// maxFramePayload bounds a frame's length field, so a corrupt one
	// cannot make the decoder allocate or skip gigabytes.
	maxFramePayload = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptLog is returned on open when the write-ahead log has a frame
// that fails its checksum with intact frames after it: that is damage,
// not a torn final write, and truncating there could drop acknowledged
// receipts, so the ledger refuses to open.
var ErrCorruptLog = errors.New("ledger: write-ahead log is corrupt")

// appendFrame appends payload as one frame to dst.
func appendFrame(dst, payload []byte) []byte {
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
	return append(append(dst, h[:]...), payload...)
}

// readFrame decodes the frame at the start of b: its payload and total
// length, or ok false if b does not start with an intact frame (too
// short, an empty or oversized length, a checksum mismatch).
func readFrame(b []byte) (payload []byte, n int, ok bool) {
	if len(b) < frameHeader {
		return nil, 0, false
	}
	size := binary.LittleEndian.Uint32(b[0:])
	if size == 0 || size > maxFramePayload || uint64(len(b)-frameHeader) < uint64(size) {
		return nil, 0, false
	}
	payload = b[frameHeader : frameHeader+int(size)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, false
	}
	return payload, frameHeader + int(size), true
}

// scanFrames decodes a whole log: the payloads of its intact frames, in
// order, and the offset where they end. A log whose first bad frame is
// followed by nothing intact ends in a torn write (the crash came during
// the last, unacknowledged group): end < len(log) says where to truncate.
// A bad frame with an intact one anywhere after it is ErrCorruptLog: a
// flipped byte, or a length field that no longer points at the next frame.
func scanFrames(log []byte) (payloads [][]byte, end int, err error) {
	for end < len(log) {
		p, n, ok := readFrame(log[end:])
		if !ok {
			if at, found := intactFrameAfter(log, end+1); found {
				return payloads, end, fmt.Errorf("%w: bad frame at offset %d, intact frame at offset %d", ErrCorruptLog, end, at)
			}
			return payloads, end, nil
		}
		payloads = append(payloads, p)
		end += n
	}
	return payloads, end, nil
}

// intactFrameAfter looks for an intact frame starting at any offset from
// `from` on. Only a log that already failed is scanned, and a torn tail is
// at most one group's write.
func intactFrameAfter(log []byte, from int) (int, bool) {
	for i := from; i+frameHeader < len(log); i++ {
		if _, _, ok := readFrame(log[i:]); ok {
			return i, true
		}
	}
	return 0, false
}
