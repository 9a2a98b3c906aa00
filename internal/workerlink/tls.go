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

// fileReloader serves a value parsed from files, reading them again at
// most once every reloadEvery and parsing them when their content changed.
// The content, not the modification time, says whether they changed: files
// replaced with their old times (cp -p, rsync -t, a restore, coarse file
// times) must not keep a renewed certificate out or a retired CA trusted. A
// reload that fails keeps the last good value and is reported through
// failed, once for each state of the files; reloaded is told of each new
// value.
type fileReloader[T any] struct {
	files    []string
	parse    func(content [][]byte) (T, error)
	failed   func(err error)
	reloaded func()

	mu           sync.Mutex
	cur          T
	loaded       [][]byte // the content cur was parsed from
	badContent   [][]byte // the content of the last failed parse (reported once)
	unreadLogged bool     // a failed read was reported (until a read succeeds)
	checked      time.Time
}

// newFileReloader reads and parses the files once; an error here is the
// caller's (a bad file at start).
func newFileReloader[T any](files []string, parse func([][]byte) (T, error), failed func(error), reloaded func()) (*fileReloader[T], error) {
	r := &fileReloader[T]{files: files, parse: parse, failed: failed, reloaded: reloaded}
	content, err := r.read()
	if err != nil {
		return nil, err
	}
	if r.cur, err = parse(content); err != nil {
		return nil, err
	}
	r.loaded, r.checked = content, time.Now()
	return r, nil
}

func (r *fileReloader[T]) read() ([][]byte, error) {
	content := make([][]byte, len(r.files))
	for i, f := range r.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("workerlink: %w", err)
		}
		content[i] = b
	}
	return content, nil
}

func sameContent(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// get is the current value, reloaded when the files changed.
func (r *fileReloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < reloadEvery {
		return r.cur
	}
	r.checked = now
	content, err := r.read()
	if err != nil { // the last good value stays
		if !r.unreadLogged {
			r.unreadLogged = true
			r.failed(err)
		}
		return r.cur
	}
	r.unreadLogged = false
	if sameContent(content, r.loaded) {
		r.badContent = nil
		return r.cur
	}
	v, err := r.parse(content)
	if err != nil { // the last good value stays
		if !sameContent(content, r.badContent) {
			r.badContent = content
			r.failed(err)
		}
		return r.cur
	}
	r.cur, r.loaded, r.badContent = v, content, nil
	r.reloaded()
	return r.cur
}

// reloadEvery bounds how often reloaded files are read. (A pair's log
// lines say the file names and the error, never the key.) A variable for
// tests.
var reloadEvery = time.Second

// CertReloader serves a certificate and key from files, loading them again
// when either file's content changes (see fileReloader), so a renewed
// certificate is picked up without a restart, however it was copied in.
type CertReloader struct {
	certFile string
	r        *fileReloader[*tls.Certificate]
}

// NewCertReloader loads the pair once; a bad pair is an error here. log
// (nil: none) is told of reloads and of those that fail.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("workerlink: both a certificate and a key file are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cr := &CertReloader{certFile: certFile}
	parse := func(content [][]byte) (*tls.Certificate, error) {
		c, err := tls.X509KeyPair(content[0], content[1])
		if err != nil {
			return nil, fmt.Errorf("workerlink: certificate %s and key %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}
	var err error
	cr.r, err = newFileReloader([]string{certFile, keyFile}, parse, func(err error) {
		log.Warn("certificate reload failed; serving the last good certificate", "cert", certFile, "key", keyFile,
			"not_after", notAfter(cr.r.cur), "err", err)
	}, func() {
		log.Info("certificate reloaded", "cert", certFile, "not_after", notAfter(cr.r.cur))
	})
	if err != nil {
		return nil, err
	}
	return cr, nil
}

// Certificate is the current pair, reloaded when the files changed.
func (r *CertReloader) Certificate() (*tls.Certificate, error) { return r.r.get(), nil }

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
// file's content changes (see fileReloader), so an operator can add or
// rotate the CAs workers' client certificates chain to without a restart.
type PoolReloader struct {
	r *fileReloader[*x509.CertPool]
}

// NewPoolReloader loads the file once; a bad file is an error here.
func NewPoolReloader(file string, log *slog.Logger) (*PoolReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := newFileReloader([]string{file}, func(content [][]byte) (*x509.CertPool, error) {
		return parsePool(file, content[0])
	}, func(err error) {
		log.Warn("client CA reload failed; verifying workers against the last good CAs", "client_ca", file, "err", err)
	}, func() {
		log.Info("client CA reloaded", "client_ca", file)
	})
	if err != nil {
		return nil, err
	}
	return &PoolReloader{r: r}, nil
}

// Pool is the current pool, reloaded when the file changed.
func (r *PoolReloader) Pool() *x509.CertPool { return r.r.get() }

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
