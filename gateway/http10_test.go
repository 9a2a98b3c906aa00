package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStreamToHTTP10Client: HTTP/1.0 has no chunked transfer coding, so a
// stream to an HTTP/1.0 client is sent as the raw event stream, without
// Transfer-Encoding or Content-Length, and ended by closing the
// connection. An HTTP/1.0 client reading chunked framing would take the
// chunk sizes for data.
func TestStreamToHTTP10Client(t *testing.T) {
	h := newHarness(t, nil)
	conn, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"` + testModel + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req := "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " + testKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "POST", ProtoMajor: 1, ProtoMinor: 0})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body) // ends only when the gateway closes the connection
	if err != nil {
		t.Fatalf("reading to the close: %v", err)
	}
	switch {
	case resp.StatusCode != 200:
		t.Fatalf("%d %s", resp.StatusCode, raw)
	case len(resp.TransferEncoding) != 0 || resp.Header.Get("Transfer-Encoding") != "":
		t.Errorf("Transfer-Encoding %v to an HTTP/1.0 client", resp.TransferEncoding)
	case resp.ContentLength != -1:
		t.Errorf("Content-Length %d on a stream", resp.ContentLength)
	case !resp.Close:
		t.Errorf("connection not closed after the stream (Connection: %q)", resp.Header.Get("Connection"))
	case !strings.HasPrefix(string(raw), "data: ") || !strings.HasSuffix(string(raw), "data: [DONE]\n\n"):
		t.Errorf("body is not the bare event stream:\n%q", raw)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get(HeaderReceipt) == "" {
		t.Error("no receipt header")
	}
}
