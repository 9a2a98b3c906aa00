package workerlink

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A gateway serving an expired certificate, or one for another host, is
// refused by the worker, and both sides say why.
func TestGatewayCertificateRefusals(t *testing.T) {
	dir := t.TempDir()
	gwCA := newCA(t, "gateway-ca")
	write(t, filepath.Join(dir, "gw-ca.pem"), gwCA.pem)
	cases := []struct {
		name, serverName string
		notAfter         time.Time
		workerLog, gwLog string
	}{
		{"expired gateway certificate", "localhost", time.Now().Add(-time.Hour), "certificate expired or not yet valid", "TLS handshake failed"},
		{"certificate for another host", "gateway.example", time.Now().Add(time.Hour), "certificate is not for this host name", "TLS handshake failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cert, key := gwCA.issue(t, t.TempDir(), "gw", tc.notAfter)
			srvTLS, err := ServerTLS(cert, key, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var gwLog, workerLog syncBuffer
			s, addr := startServer(t, ServerConfig{TLS: srvTLS, Logger: logger(&gwLog)})
			cliTLS, err := ClientTLS(filepath.Join(dir, "gw-ca.pem"), "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			cliTLS.ServerName = tc.serverName
			d := startDialer(t, DialerConfig{Addr: addr, TLS: cliTLS, Logger: logger(&workerLog), MaxBackoff: 200 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := get(ctx, d.DialContext); err == nil {
				t.Fatal("call succeeded, want the link refused")
			}
			if s.Sessions() != 0 {
				t.Fatalf("gateway holds %d sessions", s.Sessions())
			}
			if !strings.Contains(workerLog.String(), tc.workerLog) {
				t.Errorf("worker log lacks %q:\n%s", tc.workerLog, workerLog.String())
			}
			if !strings.Contains(gwLog.String(), tc.gwLog) {
				t.Errorf("gateway log lacks %q:\n%s", tc.gwLog, gwLog.String())
			}
		})
	}
}

// A renewal that leaves a broken pair behind keeps the last good
// certificate, and says so once: before, the failure was silent until the
// old certificate expired.
func TestCertReloadFailureIsLogged(t *testing.T) {
	dir := t.TempDir()
	c := newCA(t, "ca")
	cert, key := c.issue(t, dir, "gw", time.Now().Add(time.Hour))
	var log syncBuffer
	r, err := NewCertReloader(cert, key, logger(&log))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := r.Certificate()
	write(t, cert, []byte("garbage"))
	later := time.Now().Add(time.Minute)
	os.Chtimes(cert, later, later)
	for i := 0; i < 3; i++ {
		r.recheck()
		if got, _ := r.Certificate(); got != good {
			t.Fatal("a broken file replaced the last good certificate")
		}
	}
	if n := strings.Count(log.String(), "certificate reload failed"); n != 1 {
		t.Fatalf("%d failure lines, want 1:\n%s", n, log.String())
	}
	if strings.Contains(log.String(), "PRIVATE KEY") {
		t.Fatalf("key material logged:\n%s", log.String())
	}
}
