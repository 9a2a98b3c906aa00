package overhead

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-ai/tollgate/internal/workerlink"
)

// outboundLink is the worker link as a worker behind NAT has it: the
// gateway serves its worker port over TLS (a certificate made for the run,
// which the worker pins), the worker dials it once and serves batches on
// the streams the gateway opens over that connection.
type outboundLink struct {
	server  *workerlink.Server
	dialer  *workerlink.Dialer
	session string
	certDir string
	stop    context.CancelFunc
	done    chan struct{}
}

// startOutboundLink listens on a fresh 127.0.0.1 port, dials it from the
// worker's side and learns the session the gateway gave the worker (from
// a stream the worker opens, as its registration does).
func startOutboundLink(ctx context.Context, logger *slog.Logger) (l *outboundLink, err error) {
	dir, err := os.MkdirTemp("", "tollgate-bench-link-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	serverTLS, clientTLS, err := runCertificate(dir)
	if err != nil {
		cleanup()
		return nil, err
	}
	srv, err := workerlink.NewServer(workerlink.ServerConfig{TLS: serverTLS, Logger: logger})
	if err != nil {
		cleanup()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("overhead: worker link listen: %w", err)
	}
	go func() { _ = srv.Serve(ln) }()
	d, err := workerlink.NewDialer(workerlink.DialerConfig{Addr: ln.Addr().String(), TLS: clientTLS, Logger: logger})
	if err != nil {
		srv.Close()
		cleanup()
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l = &outboundLink{server: srv, dialer: d, certDir: dir, stop: stop, done: make(chan struct{})}
	go func() { defer close(l.done); _ = d.Run(runCtx) }()
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", "gateway")
	if err != nil {
		return nil, fmt.Errorf("overhead: worker link: %w", err)
	}
	defer c.Close()
	// yamux announces a stream with its first frame; Accept sees it
	// without a byte written.
	accepted := make(chan net.Conn, 1)
	go func() {
		if s, err := srv.Streams().Accept(); err == nil {
			accepted <- s
		}
	}()
	select {
	case s := <-accepted:
		defer s.Close()
		st, ok := s.(*workerlink.Stream)
		if !ok {
			return nil, errors.New("overhead: worker link: a stream without its session")
		}
		l.session = st.LinkSession()
		// As the gateway's registration does: a session no worker
		// registered on is closed after its register deadline.
		st.MarkRegistered("bench-worker")
	case <-dctx.Done():
		return nil, fmt.Errorf("overhead: worker link: no stream arrived: %w", dctx.Err())
	}
	return l, nil
}

// Dial opens a stream to the worker (the scheduler's link connection).
func (l *outboundLink) Dial(ctx context.Context) (net.Conn, error) {
	return l.server.Dial(ctx, l.session)
}

// Close ends the link on both sides.
func (l *outboundLink) Close() error {
	l.stop()
	err := l.dialer.Close()
	<-l.done
	return errors.Join(err, l.server.Close(), os.RemoveAll(l.certDir))
}

// runCertificate writes the run's certificate into dir and loads the two
// TLS configs the binary would: the gateway's (--tls-cert/--tls-key) and
// the worker's, which pins that certificate as its CA (--gateway-ca).
func runCertificate(dir string) (server, client *tls.Config, err error) {
	certFile, keyFile, err := WriteLinkCertificate(dir)
	if err != nil {
		return nil, nil, err
	}
	if server, err = workerlink.ServerTLS(certFile, keyFile, "", nil); err != nil {
		return nil, nil, err
	}
	if client, err = workerlink.ClientTLS(certFile, "", "", nil); err != nil {
		return nil, nil, err
	}
	return server, client, nil
}

// WriteLinkCertificate writes a self-signed P-256 certificate for
// 127.0.0.1, valid for a day, and its key into dir (gateway.pem,
// gateway-key.pem): the gateway's --tls-cert/--tls-key for a bench run,
// and the workers' --gateway-ca.
func WriteLinkCertificate(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tollgate bench gateway"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "gateway.pem"), filepath.Join(dir, "gateway-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
