// Package ids makes the random identifiers Tollgate hands out: request IDs,
// response IDs and receipt IDs. They are prefix + 26 characters of lowercase
// base32, so they never collide in practice and are safe in URLs and
// headers. Most are 130 bits of crypto/rand; receipt IDs start with their
// creation time instead (see Ordered), because the ledger indexes receipts
// by them. Request IDs stay fully random: see Request.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"time"
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Len is the length of the random part.
const Len = 26

// New returns prefix followed by 26 random base32 characters.
func New(prefix string) string {
	var b [17]byte // 136 bits → 28 chars; trimmed to 26 (130 bits)
	rand.Read(b[:])
	var sb strings.Builder
	sb.Grow(len(prefix) + Len)
	sb.WriteString(prefix)
	sb.WriteString(enc.EncodeToString(b[:])[:Len])
	return sb.String()
}

// sorted is the base32 alphabet of New in byte order, so that the time part
// of an Ordered ID sorts as the time does.
const sorted = "234567abcdefghijklmnopqrstuvwxyz"

// timeLen is how many characters of an Ordered ID are its time: 50 bits of
// Unix milliseconds, which last until the year 37,000.
const timeLen = 10

// Ordered returns prefix followed by 26 base32 characters: 10 of them the
// Unix time in milliseconds, most significant first, and 16 (80 bits) of
// crypto/rand, like a ULID. IDs made later sort after earlier ones, byte by
// byte, so a B-tree index keyed by them (the ledger's receipt index)
// appends near its right edge and rewrites a few pages per transaction
// instead of one page per record scattered over the whole index. 80 random bits still make them unguessable and keep
// collisions out of reach (2^40 IDs in one millisecond for an even chance).
// The creation time they show is on the receipt anyway.
func Ordered(prefix string, at time.Time) string {
	var b [10]byte // 80 bits → 16 chars exactly
	rand.Read(b[:])
	var sb strings.Builder
	sb.Grow(len(prefix) + Len)
	sb.WriteString(prefix)
	ms := uint64(max(at.UnixMilli(), 0)) & (1<<(5*timeLen) - 1)
	for i := timeLen - 1; i >= 0; i-- {
		sb.WriteByte(sorted[(ms>>(5*uint(i)))&31])
	}
	sb.WriteString(enc.EncodeToString(b[:]))
	return sb.String()
}

// Receipt returns a new receipt ID ("rcpt_" + 26 base32 characters, time
// ordered).
func Receipt() string { return Ordered("rcpt_", time.Now()) }

// Request returns a new request ID ("req_" + 26 random base32 characters).
// It is not time ordered, though the ledger's request index and a worker's
// records are keyed by it: a request ID goes to the worker that runs the
// request and, unchanged (it is part of the request digest), to the
// workers an audit re-executes it on, after the original has finished. A
// creation time in it would tell those workers the request's age, seconds
// or minutes for an audit against milliseconds for traffic, and so which
// runs are audits (docs/audit.md: the re-executing worker must not be able
// to tell an audit from traffic).
func Request() string { return New("req_") }

// ValidRequestID reports whether a client-supplied request ID may be used as
// is: 1 to 128 printable ASCII characters (space through tilde).
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
