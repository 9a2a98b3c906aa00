package workerlink

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// CertReloader serves a certificate and key from files, loading them again
// when either file's content changes (read at most once a second: both are
// small), so a renewed certificate is picked up without a restart, however
// it was copied in (with its old modification time too: cp -p, rsync -t, a
// restore). A reload that fails keeps the last good pair and is logged,
// once for each content of the files that fails.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu           sync.Mutex
	cert         *tls.Certificate
	loaded       [2][]byte // the files' content the pair was loaded from
	checked      time.Time
	failed       [2][]byte // the content of the last failed reload, logged once
	unreadLogged bool      // an unreadable file was logged (until a read succeeds)
}

// reloadEvery bounds how often the files are read. (A pair's log lines say
// the file names and the error, never the key.) A variable for tests.
var reloadEvery = time.Second

// NewCertReloader loads the pair once; a bad pair is an error here. log
// (nil: none) is told of reloads and of those that fail.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("workerlink: both a certificate and a key file are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	files, err := r.read()
	if err != nil {
		return nil, err
	}
	if err := r.load(files); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

// read reads both files.
func (r *CertReloader) read() ([2][]byte, error) {
	var files [2][]byte
	var err error
	if files[0], err = os.ReadFile(r.certFile); err != nil {
		return files, fmt.Errorf("workerlink: certificate: %w", err)
	}
	if files[1], err = os.ReadFile(r.keyFile); err != nil {
		return files, fmt.Errorf("workerlink: key: %w", err)
	}
	return files, nil
}

// load parses the pair from the files' content.
func (r *CertReloader) load(files [2][]byte) error {
	c, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return fmt.Errorf("workerlink: certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.loaded = &c, files
	return nil
}

// Certificate is the current pair, reloaded when the files changed.
func (r *CertReloader) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < reloadEvery {
		return r.cert, nil
	}
	r.checked = now
	files, err := r.read()
	if err != nil { // the last good pair stays
		if !r.unreadLogged {
			r.unreadLogged = true
			r.logFailure(err)
		}
		return r.cert, nil
	}
	r.unreadLogged = false
	if bytes.Equal(files[0], r.loaded[0]) && bytes.Equal(files[1], r.loaded[1]) {
		r.failed = [2][]byte{}
		return r.cert, nil
	}
	if err := r.load(files); err != nil { // the last good pair stays
		if !bytes.Equal(files[0], r.failed[0]) || !bytes.Equal(files[1], r.failed[1]) {
			r.failed = files
			r.logFailure(err)
		}
		return r.cert, nil
	}
	r.failed = [2][]byte{}
	r.log.Info("certificate reloaded", "cert", r.certFile, "not_after", notAfter(r.cert))
	return r.cert, nil
}

// logFailure logs a failed reload (callers log each state once).
func (r *CertReloader) logFailure(err error) {
	r.log.Warn("certificate reload failed; serving the last good certificate", "cert", r.certFile, "key", r.keyFile,
		"not_after", notAfter(r.cert), "err", err)
}

// notAfter is when the pair's certificate expires (zero if unparsed).
func notAfter(c *tls.Certificate) time.Time {
	if c == nil || c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate()
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *CertReloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate()
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("workerlink: CA file: %w", err)
	}
	return parsePool(file, pem)
}

// parsePool is LoadPool for the file's bytes.
func parsePool(file string, pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("workerlink: CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// PoolReloader serves a CA pool from a PEM file, loading it again when the
// file's content changes (read at most once a second: a CA file is small),
// so an operator can add or rotate the CAs workers' client certificates
// chain to without a restart. The content, not the modification time, says
// whether it changed: a file replaced by one with the same time (cp -p, a
// rename, coarse file times) must not keep a retired CA trusted. A reload
// that fails keeps the last good pool and is logged once for each content
// that fails.
type PoolReloader struct {
	file string
	log  *slog.Logger

	mu      sync.Mutex
	pool    *x509.CertPool
	pem     []byte // the file's content the pool was loaded from
	checked time.Time
	failed  []byte // the content of the last failed reload (nil: none)
	errored bool   // the last read failed (logged once until one succeeds)
}

// NewPoolReloader loads the file once; a bad file is an error here.
func NewPoolReloader(file string, log *slog.Logger) (*PoolReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("workerlink: CA file: %w", err)
	}
	pool, err := parsePool(file, pem)
	if err != nil {
		return nil, err
	}
	return &PoolReloader{file: file, log: log, pool: pool, pem: pem, checked: time.Now()}, nil
}

// Pool is the current pool, reloaded when the file changed.
func (r *PoolReloader) Pool() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < reloadEvery {
		return r.pool
	}
	r.checked = now
	pem, err := os.ReadFile(r.file)
	if err != nil {
		if !r.errored {
			r.errored = true
			r.log.Warn("client CA reload failed; verifying workers against the last good CAs", "client_ca", r.file, "err", err)
		}
		return r.pool
	}
	r.errored = false
	if bytes.Equal(pem, r.pem) {
		r.failed = nil
		return r.pool
	}
	pool, err := parsePool(r.file, pem)
	if err != nil {
		if r.failed == nil || !bytes.Equal(pem, r.failed) {
			r.failed = pem
			r.log.Warn("client CA reload failed; verifying workers against the last good CAs", "client_ca", r.file, "err", err)
		}
		return r.pool
	}
	r.pool, r.pem, r.failed = pool, pem, nil
	r.log.Info("client CA reloaded", "client_ca", r.file)
	return r.pool
}

// ServerTLS is the gateway's TLS config for the pair in certFile and
// keyFile (reloaded on change); with clientCAFile set, workers must present
// a certificate signed by one of its CAs (mutual TLS), the file reloaded on
// change too.
func ServerTLS(certFile, keyFile, clientCAFile string, log *slog.Logger) (*tls.Config, error) {
	r, err := NewCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if clientCAFile == "" {
		return cfg, nil
	}
	pr, err := NewPoolReloader(clientCAFile, log)
	if err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pr.Pool()
	// Each handshake uses the current pool: a config per pool, cloned once
	// when the pool changes (so session tickets keep working between
	// changes).
	var mu sync.Mutex
	current := cfg.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := pr.Pool()
		mu.Lock()
		defer mu.Unlock()
		if current.ClientCAs != pool {
			c := current.Clone()
			c.ClientCAs = pool
			current = c
		}
		return current, nil
	}
	return cfg, nil
}

// ClientTLS is the worker's TLS config: the gateway is verified against
// caFile (empty: the system roots); certFile and keyFile, when given, are
// the client certificate presented for mutual TLS.
func ClientTLS(caFile, certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := LoadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		r, err := NewCertReloader(certFile, keyFile, log)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	return cfg, nil
}

// Describe names the usual reasons a link handshake fails, for a log line
// an operator can act on; other errors are described by their text.
func Describe(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		return "certificate signed by an unknown authority (wrong CA)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "certificate expired or not yet valid"
	case errors.As(err, &invalid):
		return "certificate invalid: " + invalid.Error()
	case errors.As(err, &host):
		return "certificate is not for this host name"
	case errors.As(err, &alert):
		return "refused by the peer: " + alert.Error()
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "client didn't provide a certificate"):
		return "no client certificate, and mutual TLS is required"
	case strings.Contains(s, "certificate required"):
		return "refused by the peer: a client certificate is required"
	case strings.Contains(s, "bad certificate"), strings.Contains(s, "unknown certificate authority"):
		return "refused by the peer: certificate not accepted"
	case strings.Contains(s, "expired certificate"):
		return "refused by the peer: certificate expired"
	}
	return s
}
