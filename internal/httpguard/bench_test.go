package httpguard

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// repeatConn serves the same request bytes forever.
type repeatConn struct {
	net.Conn
	req []byte
	off int
}

func (r *repeatConn) Read(p []byte) (int, error) {
	n := copy(p, r.req[r.off:])
	r.off = (r.off + n) % len(r.req)
	return n, nil
}

// typicalChat is what an OpenAI SDK sends for a short chat request.
var typicalChat = func() []byte {
	body := `{"model":"tiny","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"` + strings.Repeat("hello ", 30) + `"}],"max_tokens":64,"stream":true}`
	head := "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: application/json\r\nAuthorization: Bearer sk-tg-0123456789abcdef0123456789abcdef\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.54.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.0\r\nX-Stainless-Os: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.12.3\r\nContent-Length: "
	return []byte(head + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// BenchmarkRead reads request streams as a server would (4 KiB reads),
// guarded and bare; the difference is the guard's cost per request.
func BenchmarkRead(b *testing.B) {
	chunked := []byte("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"100\r\n" + strings.Repeat("a", 256) + "\r\n100\r\n" + strings.Repeat("b", 256) + "\r\n0\r\n\r\n")
	for _, tc := range []struct {
		name string
		req  []byte
	}{{"chat", typicalChat}, {"chunked", chunked}, {"large-body", append(bytes.Clone(typicalChat[:bytes.Index(typicalChat, []byte("Content-Length"))]), []byte("Content-Length: 65536\r\n\r\n"+strings.Repeat("x", 65536))...)}} {
		for _, guarded := range []bool{false, true} {
			name := tc.name + "/bare"
			if guarded {
				name = tc.name + "/guarded"
			}
			b.Run(name, func(b *testing.B) {
				var c net.Conn = &repeatConn{req: tc.req}
				if guarded {
					c = NewConn(c, Limits{})
				}
				buf := make([]byte, 4096)
				b.SetBytes(int64(len(tc.req)))
				b.ReportAllocs()
				for b.Loop() {
					for n := 0; n < len(tc.req); {
						k, err := c.Read(buf)
						if err != nil && err != io.EOF {
							b.Fatal(err)
						}
						n += k
					}
				}
			})
		}
	}
}
