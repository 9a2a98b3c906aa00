// Package jsonx holds the small JSON helpers of Tollgate's hot paths (the
// worker link's events, the gateway's stream chunks and chat bodies, the
// upstream engine's chunks), where encoding/json's reflection costs more
// than the rest of the work: append-style string encoding, a string
// reader, and Scanner, the strict reader under every fast decoder. Each
// fast decoder declines what it does not read exactly as encoding/json
// would, and encoding/json then decides.
package jsonx

import (
	"unicode/utf16"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaping as encoding/json does
// without HTML escaping: quotes, backslashes, control characters, U+2028
// and U+2029; invalid UTF-8 becomes U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// ReadString reads the JSON string at the start of b and returns its value
// and the bytes it took. It declines (ok false) what it cannot read exactly
// as encoding/json does, so callers can hand those to encoding/json: a
// string that is not terminated or holds raw control characters, an
// unknown escape, a \u escape of a surrogate (encoding/json pairs them)
// and invalid UTF-8 (which encoding/json replaces).
func ReadString(b []byte) (v string, n int, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", 0, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s := b[1:i]
			if len(s) <= maxInterned {
				if v, ok := interned[string(s)]; ok {
					return v, i + 1, true
				}
			}
			if !utf8.Valid(s) {
				return "", 0, false
			}
			return string(s), i + 1, true
		case c == '\\':
			return readEscaped(b, i)
		case c < 0x20:
			return "", 0, false
		}
	}
	return "", 0, false
}

// interned holds the short strings nearly every request, answer and
// worker event carries (roles, finish reasons, object kinds, the event
// types), so that reading them allocates nothing.
var interned = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		"system", "user", "assistant", "tool", "developer",
		"stop", "length", "content_filter", "tool_calls",
		"chat.completion", "chat.completion.chunk", "text_completion", "list", "embedding",
		"delta", "done", "failed", "text", "float", "base64",
	} {
		m[s] = s
	}
	return m
}()

// maxInterned is the longest interned string.
const maxInterned = len("chat.completion.chunk")

func readEscaped(b []byte, i int) (string, int, bool) {
	out := make([]byte, 0, i+16)
	out = append(out, b[1:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", 0, false
			}
			return string(out), i + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			return "", 0, false
		}
		e := b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'u':
			if len(b)-i < 4 {
				return "", 0, false
			}
			r, ok := hex4(b[i : i+4])
			if !ok || utf16.IsSurrogate(r) {
				return "", 0, false
			}
			out = utf8.AppendRune(out, r)
			i += 4
		default:
			return "", 0, false
		}
	}
	return "", 0, false
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
