package receipts

import (
	"testing"
	"time"
)

// wrapped is t + 2^64 ns: time.Time.UnixNano is undefined past 2262 and
// wraps, so without a range check this later time has the same Unix
// nanoseconds as t.
func wrapped(t time.Time) time.Time {
	for range 4 {
		t = t.Add(time.Duration(1 << 62))
	}
	return t
}

// TestTimesOutsideUnixNanosRefused: a time whose Unix nanoseconds do not
// fit an int64 has no canonical encoding. Before the range check, a batch
// time of 2610-09-20 had the same public digest (and so verified with the
// same proof) as the batch's real time in 2026, and a request time of 2523
// the same request commitment as 2023's: two receipt encodings, one
// statement, the displayed time unproven.
func TestTimesOutsideUnixNanosRefused(t *testing.T) {
	real := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	alias := wrapped(real)
	if alias.UnixNano() != real.UnixNano() {
		t.Fatalf("precondition: %s and %s do not alias", real, alias)
	}
	pub := BatchPublic{Root: ElementHex(el(1)), ModelVersion: ElementHex(el(2)), RegistryRoot: ElementHex(el(3)),
		WorkerID: ElementHex(el(4)), LeafCount: 1, TotalPromptTokens: 5, TotalCompletionTokens: 6, Sequence: 7, Time: BatchTime(real)}
	if _, err := PublicDigestV2(&pub); err != nil {
		t.Fatalf("honest batch time refused: %v", err)
	}
	for _, bt := range []time.Time{alias, time.Unix(0, 1<<63-1).Add(1), time.Unix(0, -1)} {
		p := pub
		p.Time = BatchTime(bt)
		if _, err := PublicDigestV2(&p); err == nil {
			t.Errorf("batch time %s accepted (Unix ns %d)", bt.Format(time.RFC3339Nano), bt.UnixNano())
		}
	}
	for _, ok := range []time.Time{time.Unix(0, 0), time.Unix(0, 1<<63-1)} {
		p := pub
		p.Time = BatchTime(ok)
		if _, err := PublicDigestV2(&p); err != nil {
			t.Errorf("batch time %s refused: %v", ok.Format(time.RFC3339Nano), err)
		}
	}

	rq := katRequest
	rq.Time = wrapped(katRequest.Time)
	if _, err := RequestCommitment(rq); err == nil {
		t.Errorf("request time %s accepted: same commitment as %s", rq.Time.Format(time.RFC3339Nano), katRequest.Time.UTC().Format(time.RFC3339Nano))
	}
}
