package workerlink

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// writeLog is a net.Conn that records each Write.
type writeLog struct {
	net.Conn
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func frame(typ uint8, flags uint16, id, length uint32) []byte {
	h := make([]byte, frameHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// TestJoinedWriter: the bytes written are yamux's, in order; a data
// frame's header goes out with its body, everything else as it comes.
func TestJoinedWriter(t *testing.T) {
	body := []byte("hello, worker")
	writes := [][]byte{
		frame(frameTypeWindowUpdate, frameFlagSYN, 1, 256<<10), // no body
		frame(frameTypeData, 0, 1, uint32(len(body))), body,
		frame(frameTypeData, frameFlagFIN, 1, 0), // empty data frame: no body follows
		frame(frameTypePing, frameFlagSYN, 0, 7),
		frame(frameTypeData, 0, 3, 1), []byte("x"),
	}
	log := &writeLog{}
	j := newJoinedWriter(log)
	var want []byte
	for _, w := range writes {
		if n, err := j.Write(w); n != len(w) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		want = append(want, w...)
	}
	if got := bytes.Join(log.writes, nil); !bytes.Equal(got, want) {
		t.Fatalf("wire bytes differ:\n got %x\nwant %x", got, want)
	}
	if len(log.writes) != 5 {
		t.Fatalf("%d writes reached the connection, want 5 (two data frames joined with their bodies)", len(log.writes))
	}
	if !bytes.Equal(log.writes[1], append(frame(frameTypeData, 0, 1, uint32(len(body))), body...)) {
		t.Fatalf("the first data frame went out as %x", log.writes[1])
	}
}

// TestJoinedWriterUnderYamux: a yamux session over joined writers on both
// ends carries streams both ways, and each data frame crosses the
// connection in one write.
func TestJoinedWriterUnderYamux(t *testing.T) {
	a, b := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	counter := &countingConn{Conn: a}
	cli, err := yamux.Client(newJoinedWriter(counter), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := yamux.Server(newJoinedWriter(b), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() {
		st, err := srv.Accept()
		if err != nil {
			done <- err
			return
		}
		defer st.Close()
		_, err = io.Copy(st, st) // echo
		done <- err
	}()
	st, err := cli.Open()
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("tollgate "), 1000)
	// 10 × 9 kB stays under half the 256 KiB window, so no window update
	// (a header-only frame) is sent between the counts.
	for range 10 {
		before := counter.writes()
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n := counter.writes() - before; n != 1 {
			t.Fatalf("one data frame took %d writes", n)
		}
		got := make([]byte, len(msg))
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %v", err)
		}
	}
	st.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type countingConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) writes() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }
