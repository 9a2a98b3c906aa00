package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSignedPair writes a certificate and key for 127.0.0.1 into dir.
func selfSignedPair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Attack (on the configuration): flag combinations that would leave the
// link in plain TCP, or that mix plain TCP and TLS flags, are refused at
// start; none turns TLS off silently.
func TestLinkFlagsNeverFallBackToPlainTCP(t *testing.T) {
	cert, key := selfSignedPair(t, t.TempDir())
	logger := slog.New(slog.DiscardHandler)
	for _, args := range [][]string{
		{"--worker-listen", ":0"},                     // no TLS and no --worker-link-insecure
		{"--worker-listen", ":0", "--tls-cert", cert}, // half a pair
		{"--worker-listen", ":0", "--worker-link-insecure", "--tls-cert", cert, "--tls-key", key},
		{"--worker-listen", ":0", "--worker-link-insecure", "--worker-client-ca", cert},
		{"--worker-client-ca", cert}, // mTLS asked for with no link
		{"--worker-link-insecure"},
	} {
		var lf linkFlags
		fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
		lf.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if link, _, err := lf.server(logger); err == nil {
			link.Close()
			t.Errorf("gateway %q: accepted", strings.Join(args, " "))
		}
	}
	for _, args := range [][]string{
		{"--gateway-link", "127.0.0.1:1", "--gateway-link-insecure", "--gateway-ca", cert},
		{"--gateway-link", "127.0.0.1:1", "--gateway-link-insecure", "--tls-cert", cert, "--tls-key", key},
		{"--gateway-link", "127.0.0.1:1", "--tls-cert", cert},
		{"--gateway-ca", cert},
		{"--gateway-link-insecure"},
	} {
		var wf workerLinkFlags
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		wf.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if d, err := wf.dialer(logger); err == nil {
			if d != nil {
				d.Close()
			}
			t.Errorf("worker %q: accepted", strings.Join(args, " "))
		}
	}
}

// A worker given only --gateway-link speaks TLS (its first byte is a TLS
// handshake record), never plain yamux.
func TestWorkerLinkDefaultsToTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wf workerLinkFlags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	wf.register(fs)
	if err := fs.Parse([]string{"--gateway-link", ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	d, err := wf.dialer(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	first := make([]byte, 1)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatal(err)
	}
	if first[0] != 0x16 { // TLS handshake record
		t.Fatalf("the worker's first byte is %#x, not a TLS handshake", first[0])
	}
}

// A gateway with --worker-listen and a certificate serves the link over
// TLS only: a worker speaking plain yamux gets no session.
func TestGatewayLinkRefusesPlainTCP(t *testing.T) {
	cert, key := selfSignedPair(t, t.TempDir())
	var lf linkFlags
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	lf.register(fs)
	if err := fs.Parse([]string{"--worker-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key}); err != nil {
		t.Fatal(err)
	}
	link, _, err := lf.server(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go link.Serve(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A yamux ping query, as a plain-TCP worker's first frame.
	c.Write([]byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	if len(b) >= 12 && b[0] == 0 && b[1] == 2 {
		t.Fatalf("the gateway answered a plain yamux ping: %x", b)
	}
	if link.Sessions() != 0 {
		t.Fatalf("%d sessions from a plain-TCP peer", link.Sessions())
	}
}
