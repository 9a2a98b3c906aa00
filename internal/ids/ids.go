// Package ids makes the random identifiers Tollgate hands out: request IDs,
// response IDs and receipt IDs. They are prefix + 26 characters of lowercase
// base32 (130 bits of crypto/rand), so they never collide in practice and are
// safe in URLs and headers.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
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

// Receipt returns a new receipt ID ("rcpt_" + 26 base32 characters).
func Receipt() string { return New("rcpt_") }

// Request returns a new request ID ("req_" + 26 base32 characters).
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
