// Package guardtest is the request-smuggling table shared by the httpguard
// tests and the gateway's raw-socket tests, so both play the same attacks.
package guardtest

import "strings"

// Case is one request stream a front proxy framing by
// Content-Length (or by the first of two headers, or by unfolded lines)
// would forward as one request, followed by a second request. The server
// must answer the first with 400 and close the connection: the second,
// smuggled request ("GET /smuggled") must never be answered.
type Case struct {
	Name   string
	Stream string
	// Status is the answer expected for the first request.
	Status int
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// clte builds a request with both Content-Length (covering the whole
// smuggled request) and the given Transfer-Encoding line.
func clte(teLine string) string {
	body := "0\r\n\r\n" + smuggled
	return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + itoa(len(body)) + "\r\n" + teLine + "\r\n\r\n" + body
}

// tecl puts Transfer-Encoding first, then Content-Length.
func tecl(teLine string) string {
	body := "0\r\n\r\n" + smuggled
	return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + teLine + "\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{digits[n%10]}, b...)
	}
	return string(b)
}

// post is a request whose header block is head (CRLF-terminated lines,
// without the final blank line) and whose body is the smuggled request.
func post(head string) string {
	return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + head + "\r\n" + smuggled
}

// Cases are the streams every guarded server must refuse.
var Cases = []Case{
	{"CL+TE chunked", clte("Transfer-Encoding: chunked"), 400},
	{"TE+CL chunked", tecl("Transfer-Encoding: chunked"), 400},
	{"CL+TE two spaces", clte("Transfer-Encoding:  chunked"), 400},
	{"CL+TE space before colon", clte("Transfer-Encoding : chunked"), 400},
	{"CL+TE tab", clte("Transfer-Encoding:\tchunked"), 400},
	{"CL+TE tab after value", clte("Transfer-Encoding: chunked\t"), 400},
	{"CL+TE mixed case", clte("transfer-ENCODING: ChUnKeD"), 400},
	{"CL+TE chunked, identity", clte("Transfer-Encoding: chunked, identity"), 400},
	{"CL+TE identity, chunked", clte("Transfer-Encoding: identity, chunked"), 400},
	{"CL+TE vertical tab", clte("Transfer-Encoding:\vchunked"), 400},
	{"CL+TE xchunked", clte("Transfer-Encoding: xchunked"), 400},
	{"CL+TE quoted", clte("Transfer-Encoding: \"chunked\""), 400},
	{"CL+TE twice", clte("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"), 400},
	{"CL+TE obs-fold value", clte("Transfer-Encoding:\r\n chunked"), 400},
	{"CL+TE folded onto another", clte("X-Pad: a\r\n Transfer-Encoding: chunked"), 400},
	{"CL+TE HTTP/1.0", strings.Replace(clte("Transfer-Encoding: chunked"), "HTTP/1.1", "HTTP/1.0", 1), 400},
	{"TE alone HTTP/1.0", strings.Replace(post("Transfer-Encoding: chunked\r\n"), "HTTP/1.1", "HTTP/1.0", 1), 400},
	{"duplicate CL equal", post("Content-Length: " + itoa(len(smuggled)) + "\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"duplicate CL differing", post("Content-Length: 0\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"CL list", post("Content-Length: 0, " + itoa(len(smuggled)) + "\r\n"), 400},
	{"CL plus sign", post("Content-Length: +" + itoa(len(smuggled)) + "\r\n"), 400},
	{"CL space before colon", post("Content-Length : " + itoa(len(smuggled)) + "\r\n"), 400},
	{"CL obs-fold", post("Content-Length:\r\n " + itoa(len(smuggled)) + "\r\n"), 400},
	{"obs-fold any header", post("X-Pad: a\r\n b\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"obs-fold tab", post("X-Pad: a\r\n\tb\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"header name with space", post("Content Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"header name with inner space", post("X Pad: a\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"header name with @", post("X@Pad: a\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"header name with NUL", post("X\x00Pad: a\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"header name leading space", post(" X-Pad: a\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"empty header name", post(": a\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"bare LF in header", post("X-Pad: a\nTransfer-Encoding: chunked\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"bare CR in header", post("X-Pad: a\rTransfer-Encoding: chunked\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"NUL in value", post("X-Pad: a\x00b\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n"), 400},
	{"chunk size LF only", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n" + smuggled, 400},
	{"chunk ext with LF", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n" + smuggled, 400},
	{"chunk size overflow", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000000002\r\nab\r\n0\r\n\r\n" + smuggled, 400},
	{"chunk data without CRLF", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n" + smuggled, 400},
	{"TE in trailer", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n" + smuggled, 400},
	{"request line two spaces", "POST  /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n\r\n" + smuggled, 400},
	{"HTTP/2 prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + smuggled, 400},
}

// Pipelined is a well-formed stream the guard must pass unchanged: three
// requests, each answered, on one keep-alive connection.
var Pipelined = []string{
	"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
	"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
	"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-Tab:\tv\t\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
}
