package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/workers"
)

// linkFlags are the gateway's TLS and worker-link flags.
type linkFlags struct {
	workerListen, tlsCert, tlsKey, clientCA string
	insecure                                bool
}

func (l *linkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.workerListen, "worker-listen", "", "serve the outbound worker link (workers behind NAT dial in with --gateway-link) on this address; default off")
	fs.StringVar(&l.tlsCert, "tls-cert", "", "PEM certificate for the API port and the worker link (reloaded when the file changes)")
	fs.StringVar(&l.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&l.clientCA, "worker-client-ca", "", "require workers on the link to present a client certificate signed by a CA in this PEM file (mutual TLS)")
	fs.BoolVar(&l.insecure, "worker-link-insecure", false, "serve the worker link as plain TCP (tests and development only: batches and session tokens travel in the clear)")
}

// server checks the flags and builds the worker link (nil: off) and the
// API port's TLS config (nil: plain HTTP).
func (l *linkFlags) server(logger *slog.Logger) (*workerlink.Server, *tls.Config, error) {
	if (l.tlsCert == "") != (l.tlsKey == "") {
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	}
	var cfg *tls.Config
	if l.tlsCert != "" {
		var err error
		if cfg, err = workerlink.ServerTLS(l.tlsCert, l.tlsKey, "", logger); err != nil {
			return nil, nil, fmt.Errorf("--tls-cert: %w", err)
		}
	}
	if l.workerListen == "" {
		if l.clientCA != "" || l.insecure {
			return nil, nil, errors.New("--worker-client-ca and --worker-link-insecure need --worker-listen")
		}
		return nil, cfg, nil
	}
	var linkTLS *tls.Config
	switch {
	case l.insecure && (l.tlsCert != "" || l.clientCA != ""):
		return nil, nil, errors.New("--worker-link-insecure turns TLS off on the link; drop it or drop --tls-cert/--worker-client-ca")
	case l.insecure:
		logger.Warn("worker link without TLS (--worker-link-insecure): for tests and development only")
	case l.tlsCert == "":
		return nil, nil, errors.New("--worker-listen needs --tls-cert and --tls-key (or --worker-link-insecure for development)")
	default:
		var err error
		if linkTLS, err = workerlink.ServerTLS(l.tlsCert, l.tlsKey, l.clientCA, logger); err != nil {
			return nil, nil, fmt.Errorf("--worker-client-ca: %w", err)
		}
	}
	link, err := workerlink.NewServer(workerlink.ServerConfig{TLS: linkTLS, Insecure: l.insecure, Logger: logger})
	return link, cfg, err
}

// serve listens on --worker-listen and serves the gateway's routes on the
// streams workers open.
func (l *linkFlags) serve(link *workerlink.Server, srv *gateway.Server, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", l.workerListen)
	if err != nil {
		return fmt.Errorf("--worker-listen: %w", err)
	}
	go func() {
		if err := link.Serve(ln); err != nil && !errors.Is(err, workerlink.ErrClosed) {
			logger.Error("worker link stopped", "err", err)
		}
	}()
	go srv.Serve(link.Streams())
	logger.Info("worker link listening", "addr", ln.Addr().String(), "tls", !l.insecure, "mutual_tls", l.clientCA != "")
	return nil
}

// workerLinkFlags are the worker's outbound-link flags.
type workerLinkFlags struct {
	addr, gatewayCA, tlsCert, tlsKey string
	insecure                         bool
}

func (w *workerLinkFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&w.addr, "gateway-link", "", "dial out to the gateway's worker link at HOST:PORT (its --worker-listen) instead of serving --listen: for workers behind NAT")
	fs.StringVar(&w.gatewayCA, "gateway-ca", "", "verify the gateway's link certificate against the CAs in this PEM file (default: the system roots)")
	fs.StringVar(&w.tlsCert, "tls-cert", "", "client certificate (PEM) presented on the link, where the gateway requires mutual TLS")
	fs.StringVar(&w.tlsKey, "tls-key", "", "private key for --tls-cert")
	fs.BoolVar(&w.insecure, "gateway-link-insecure", false, "dial the link as plain TCP (tests and development only)")
}

// dialer builds the outbound link, or nil without --gateway-link.
func (w *workerLinkFlags) dialer(logger *slog.Logger) (*workerlink.Dialer, error) {
	if w.addr == "" {
		if w.gatewayCA != "" || w.tlsCert != "" || w.tlsKey != "" || w.insecure {
			return nil, errors.New("--gateway-ca, --tls-cert, --tls-key and --gateway-link-insecure need --gateway-link")
		}
		return nil, nil
	}
	if (w.tlsCert == "") != (w.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	var cfg *tls.Config
	if w.insecure {
		if w.gatewayCA != "" || w.tlsCert != "" {
			return nil, errors.New("--gateway-link-insecure turns TLS off; drop it or drop --gateway-ca/--tls-cert")
		}
		logger.Warn("gateway link without TLS (--gateway-link-insecure): for tests and development only")
	} else {
		var err error
		if cfg, err = workerlink.ClientTLS(w.gatewayCA, w.tlsCert, w.tlsKey, logger); err != nil {
			return nil, err
		}
	}
	return workerlink.NewDialer(workerlink.DialerConfig{Addr: w.addr, TLS: cfg, Insecure: w.insecure, Logger: logger})
}

// runLink keeps the worker's link up until ctx ends.
func runLink(ctx context.Context, d *workerlink.Dialer, logger *slog.Logger) {
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, workerlink.ErrClosed) {
		logger.Error("gateway link stopped", "err", err)
	}
}

// linkTransport is the worker's transport for its calls to the gateway
// over the link.
func linkTransport(d *workerlink.Dialer) *http.Transport {
	tr := workers.NewTransport()
	tr.DialContext = d.DialContext
	return tr
}
