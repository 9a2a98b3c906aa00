package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// TestStreamToHTTP10Client: HTTP/1.0 has no chunked transfer coding, so a
// stream to an HTTP/1.0 client is sent as the raw event stream, without
// Transfer-Encoding or Content-Length, and ended by closing the
// connection. An HTTP/1.0 client reading chunked framing would take the
// chunk sizes for data.
func TestStreamToHTTP10Client(t *testing.T) {
	h := newHarness(t, nil)
	conn := http10Stream(t, h)
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

// http10Stream sends a streamed chat request as an HTTP/1.0 client.
func http10Stream(t *testing.T, h *harness) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := `{"model":"` + testModel + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req := "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer " + testKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// TestShutdownWaitsForHTTP10Stream: fasthttp's Shutdown stops tracking a
// hijacked connection, so the gateway waits for an HTTP/1.0 stream in
// progress itself: Shutdown returns only after the stream has ended, and
// the client gets all of it.
func TestShutdownWaitsForHTTP10Stream(t *testing.T) {
	h := newHarness(t, nil)
	release, started := make(chan struct{}), make(chan struct{})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		if err := onEvent(task.Event{Type: task.EventDelta, Text: "Once", Tokens: 1}); err != nil {
			return err
		}
		close(started)
		<-release
		if err := onEvent(task.Event{Type: task.EventDelta, Text: " upon", Tokens: 1}); err != nil {
			return err
		}
		return onEvent(partialDone(tk, "stop", 2, nil))
	}
	conn := http10Stream(t, h)
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- h.srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while an HTTP/1.0 stream was in progress", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	raw, err := io.ReadAll(conn)
	if err != nil || !strings.Contains(string(raw), "Once") || !strings.Contains(string(raw), " upon") || !strings.HasSuffix(string(raw), "data: [DONE]\n\n") {
		t.Fatalf("stream cut by the shutdown (%v):\n%s", err, raw)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
