package workerlink

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// handshake dials addr over TLS with the client certificate in
// certFile/keyFile and completes a handshake (TLS 1.3 reports a refused
// client certificate on the first read).
func handshake(t *testing.T, addr, caFile, certFile, keyFile string) error {
	t.Helper()
	cfg, err := ClientTLS(caFile, certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "localhost"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil // accepted: the server waits for us
	}
	return err
}

// An operator rotating the CA that workers' client certificates chain to
// (mutual TLS) does not restart the gateway: the client CA file is reloaded
// on change, and a broken file keeps the last good CAs, logged once.
func TestClientCAReload(t *testing.T) {
	old := reloadEvery
	reloadEvery = 0
	t.Cleanup(func() { reloadEvery = old })
	dir := t.TempDir()
	gwCA, ca1, ca2 := newCA(t, "gateway-ca"), newCA(t, "workers-1"), newCA(t, "workers-2")
	gwCAFile, clientCAFile := filepath.Join(dir, "gw-ca.pem"), filepath.Join(dir, "client-ca.pem")
	write(t, gwCAFile, gwCA.pem)
	write(t, clientCAFile, ca1.pem)
	cert, key := gwCA.issue(t, dir, "gw", time.Now().Add(time.Hour))
	w1Cert, w1Key := ca1.issue(t, t.TempDir(), "worker", time.Now().Add(time.Hour))
	w2Cert, w2Key := ca2.issue(t, t.TempDir(), "worker", time.Now().Add(time.Hour))
	var log syncBuffer
	srvTLS, err := ServerTLS(cert, key, clientCAFile, logger(&log))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				time.Sleep(3 * time.Second) // hold it open: the client's read times out
				c.Close()
			}()
		}
	}()
	addr := ln.Addr().String()
	bump := func(n int) {
		at := time.Now().Add(time.Duration(n) * time.Minute)
		if err := os.Chtimes(clientCAFile, at, at); err != nil {
			t.Fatal(err)
		}
	}

	if err := handshake(t, addr, gwCAFile, w1Cert, w1Key); err != nil {
		t.Fatalf("worker of CA 1 refused: %v", err)
	}
	if err := handshake(t, addr, gwCAFile, w2Cert, w2Key); err == nil {
		t.Fatal("worker of CA 2 accepted before CA 2 was configured")
	}

	write(t, clientCAFile, ca2.pem) // rotation: CA 1 out, CA 2 in
	bump(1)
	if err := handshake(t, addr, gwCAFile, w2Cert, w2Key); err != nil {
		t.Fatalf("worker of CA 2 refused after the rotation: %v", err)
	}
	if err := handshake(t, addr, gwCAFile, w1Cert, w1Key); err == nil {
		t.Fatal("worker of the retired CA 1 still accepted")
	}

	write(t, clientCAFile, []byte("not a certificate"))
	bump(2)
	for range 2 {
		if err := handshake(t, addr, gwCAFile, w2Cert, w2Key); err != nil {
			t.Fatalf("a broken CA file dropped the last good CAs: %v", err)
		}
	}
	if n := strings.Count(log.String(), "client CA reload failed"); n != 1 {
		t.Fatalf("%d log lines for one broken file, want 1:\n%s", n, log.String())
	}
}

// A CA file replaced by one with the same modification time (cp -p, rsync
// -t, tar x, a rename of a file written in the same clock tick, a
// filesystem with coarse times) is still reloaded: a retired CA must not
// stay trusted because the file's time did not move.
func TestClientCAReloadSameModTime(t *testing.T) {
	old := reloadEvery
	reloadEvery = 0
	t.Cleanup(func() { reloadEvery = old })
	dir := t.TempDir()
	ca1, ca2 := newCA(t, "workers-1"), newCA(t, "workers-2")
	file := filepath.Join(dir, "client-ca.pem")
	write(t, file, ca1.pem)
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(file, at, at); err != nil {
		t.Fatal(err)
	}
	r, err := NewPoolReloader(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := r.Pool()

	// Rotation by rename: the new file carries the old one's time.
	next := filepath.Join(dir, "client-ca.pem.new")
	write(t, next, ca2.pem)
	if err := os.Chtimes(next, at, at); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, file); err != nil {
		t.Fatal(err)
	}
	if r.Pool() == first {
		t.Fatal("CA file replaced with the same modification time: the retired CA's pool is still served")
	}
	if got := r.Pool(); !got.Equal(mustPool(t, file)) {
		t.Fatal("the reloaded pool is not the new file's")
	}
}

func mustPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	p, err := LoadPool(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A renewed certificate copied over the old one with the old files' times
// (cp -p, rsync -t, a restore) is picked up: the reloader compares the
// files' content, not their modification times. Before, it kept serving
// the old certificate until it expired.
func TestCertReloadSameModTime(t *testing.T) {
	old := reloadEvery
	reloadEvery = 0
	t.Cleanup(func() { reloadEvery = old })
	dir := t.TempDir()
	c := newCA(t, "ca")
	cert, key := c.issue(t, dir, "gw", time.Now().Add(time.Hour))
	ci, err := os.Stat(cert)
	if err != nil {
		t.Fatal(err)
	}
	ki, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewCertReloader(cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Certificate()
	c.issue(t, dir, "gw", time.Now().Add(2*time.Hour)) // same paths, new pair
	if err := os.Chtimes(cert, ci.ModTime(), ci.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(key, ki.ModTime(), ki.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, _ := r.Certificate()
	if bytes.Equal(before.Certificate[0], after.Certificate[0]) {
		t.Fatal("the renewed pair, copied with the old times, was not loaded")
	}
}

// recheck makes the next Certificate read the files again, whatever
// reloadEvery is.
func (r *CertReloader) recheck() {
	r.r.mu.Lock()
	r.r.checked = time.Time{}
	r.r.mu.Unlock()
}
