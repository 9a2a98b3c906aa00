package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

func init() {
	register(commands, "mock-upstream", "serve the vLLM-like mock OpenAI upstream (internal/upstreamtest) for client test suites", runMockUpstream)
}

// mockUpstreamReady starts the line mock-upstream prints once it serves;
// test suites wait for it.
const mockUpstreamReady = "mock upstream serving "

// runMockUpstream is `tollgate mock-upstream`: the test mock of
// internal/upstreamtest on a chosen address, until SIGINT or SIGTERM. It
// is what the Node client suite (test/node) puts behind a `tollgate worker
// --engine openai`; nothing in production uses it.
func runMockUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate mock-upstream", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8000", "address to serve the mock's /v1 and /metrics on")
	models := fs.String("models", "mock-llm", "comma-separated generation models served")
	embedModels := fs.String("embedding-models", "", "comma-separated embedding models served (default: the --models, so a worker given --embeddings can embed with its model)")
	apiKey := fs.String("api-key", "", "when set, requests need Authorization: Bearer KEY")
	tokenDelay := fs.Duration("token-delay", 0, "delay between streamed tokens")
	flavor := fs.String("flavor", "vllm", "metric names on /metrics: vllm, sglang or llamacpp")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := upstreamtest.Config{Models: splitList(*models), EmbeddingModels: splitList(*embedModels),
		APIKey: *apiKey, TokenDelay: *tokenDelay, Flavor: *flavor}
	if len(cfg.Models) == 0 {
		return errors.New("--models: at least one model is required")
	}
	if len(cfg.EmbeddingModels) == 0 {
		cfg.EmbeddingModels = cfg.Models
	}
	switch cfg.Flavor {
	case "vllm", "sglang", "llamacpp":
	default:
		return fmt.Errorf("--flavor: %q is not vllm, sglang or llamacpp", cfg.Flavor)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return serveMockUpstream(ctx, ln, cfg, os.Stderr)
}

// serveMockUpstream serves a mock built from cfg on ln until ctx ends,
// writing the ready line to logw once it accepts requests.
//
// upstreamtest.Start picks its own loopback port, so the mock runs there
// and ln forwards to it (streams flushed as they come).
func serveMockUpstream(ctx context.Context, ln net.Listener, cfg upstreamtest.Config, logw io.Writer) error {
	up := upstreamtest.Start(cfg)
	defer up.Close()
	target, err := url.Parse(strings.TrimSuffix(up.URL, "/v1"))
	if err != nil {
		ln.Close()
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(logw, "%shttp://%s/v1 models=%s embedding_models=%s\n", mockUpstreamReady, ln.Addr(),
		strings.Join(cfg.Models, ","), strings.Join(cfg.EmbeddingModels, ","))
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
