package ledger

import "github.com/tollgate-ai/tollgate/internal/wal"

// The write-ahead log's frames are internal/wal's (see its package doc for
// the format and how a replay finds the log's end): one frame per
// acknowledged Append, its payload the request's entries as a JSON array
// (Seq, SubjectSeq set). A torn write loses whole requests, never part of
// one. What follows names them for this package.

const (
	frameHeader     = wal.HeaderSize
	maxFramePayload = wal.MaxPayload
	// minEntryBytes is less than any entry's JSON takes in a frame (an
	// entry carries its receipt and request IDs and two 64-digit digests).
	minEntryBytes = wal.MinEntryBytes
)

// ErrCorruptLog is returned on open when the write-ahead log has a frame
// that fails its checksum with an intact frame of a later commit group
// after it: that is damage, not a torn final write, and truncating there
// would drop acknowledged receipts, so the ledger refuses to open.
var ErrCorruptLog = wal.ErrCorrupt

// frame is one decoded log frame.
type frame struct {
	seq     uint64
	count   uint32
	group   uint64
	payload []byte
}

func (f frame) wal() wal.Frame {
	return wal.Frame{Seq: f.seq, Count: f.count, Group: f.group, Payload: f.payload}
}

// appendFrame appends f as one frame to dst.
func appendFrame(dst []byte, f frame) []byte { return wal.AppendFrame(dst, f.wal()) }

// plausibleLater is wal.PlausibleLater.
func plausibleLater(f frame, minGroup, maxSeq uint64) bool {
	return wal.PlausibleLater(f.wal(), minGroup, maxSeq)
}

// scanFrames is wal.Scan: the log's frames up to its end, the offset of
// that end, ErrCorruptLog for damage. minSeq is the first Seq bbolt does
// not hold.
func scanFrames(log []byte, minSeq uint64) ([]frame, int, error) {
	fs, end, err := wal.Scan(log, minSeq)
	frames := make([]frame, len(fs))
	for i, f := range fs {
		frames[i] = frame{seq: f.Seq, count: f.Count, group: f.Group, payload: f.Payload}
	}
	return frames, end, err
}
