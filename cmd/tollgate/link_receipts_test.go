package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

// TestLinkWorkerReceiptsProven: a worker behind NAT (it dialled the
// gateway's worker link; it has no address the gateway could reach) gets
// its receipts proven like any other. The in-process prover countersigns
// its batches over the link: before, it POSTed to the link:// URL the
// ledger holds, which no HTTP client can dial, and every receipt of a link
// worker stayed pending for ever.
func TestLinkWorkerReceiptsProven(t *testing.T) {
	if testing.Short() {
		t.Skip("proves receipts; skipped in -short mode")
	}
	keyDir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	const token = "pt-link-receipts-0123456789"
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.APIKeys = []config.APIKey{{ID: "app", Key: sdkKey}}
	cfg.ProviderTokens = []string{token}
	cfg.OpenRegistration = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	link, err := workerlink.NewServer(workerlink.ServerConfig{Insecure: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := startGateway(cfg, ln, stackOptions{receipts: true, keyDir: keyDir, link: link}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.stop() })
	lf := linkFlags{workerListen: "127.0.0.1:0", insecure: true}
	linkLn, err := net.Listen("tcp", lf.workerListen)
	if err != nil {
		t.Fatal(err)
	}
	go link.Serve(linkLn)
	go gw.srv.Serve(link.Streams())
	t.Cleanup(func() { link.Close() })
	gw.startProver(context.Background(), keyPolicy{have: true})

	// The worker, as `tollgate worker --gateway-link --gateway-link-insecure` runs it.
	eng, closeEng, err := openEngine(engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 0.01}, logger)
	if err != nil {
		t.Fatal(err)
	}
	key, err := loadOrCreateKey(filepath.Join(t.TempDir(), "worker.key"), logger)
	if err != nil {
		t.Fatal(err)
	}
	wl := workerLinkFlags{addr: linkLn.Addr().String(), insecure: true}
	d, err := wl.dialer(logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	linkDone, done := make(chan struct{}), make(chan error, 1)
	go func() { defer close(linkDone); runLink(context.WithoutCancel(ctx), d, logger) }()
	go func() {
		done <- runWorkerNode(ctx, d, workerNode{gatewayURL: "http://gateway-link", advertise: workers.LinkOutbound,
			providerToken: token, key: key, engine: eng, dataDir: t.TempDir(), logger: logger.With("worker", "behind-nat"),
			httpClient: &http.Client{Transport: linkTransport(d), Timeout: 10 * time.Second}})
	}()
	t.Cleanup(func() { cancel(); <-done; d.Close(); <-linkDone; closeEng() })

	waitUntil(t, 30*time.Second, "the link worker in rotation", func() bool {
		for _, w := range gw.sched.Workers() {
			if w.Healthy && strings.HasPrefix(w.URL, workers.LinkScheme+"://") {
				return true
			}
		}
		return false
	})
	var ids []string
	for i := range 3 {
		body := `{"model":"sim-tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":4` + map[bool]string{true: `,"stream":true`}[i == 1] + `}`
		id, err := postChat(http.DefaultClient, gw.URL()+"/v1/chat/completions", body)
		if err != nil || id == "" {
			t.Fatalf("request %d over the link: receipt %q, %v", i, id, err)
		}
		ids = append(ids, id)
	}
	st := gw.ledger.Store()
	waitUntil(t, 90*time.Second, "the link worker's receipts proven", func() bool {
		for _, id := range ids {
			if _, b, err := st.Get(context.Background(), id); err != nil || b == nil || b.Status != receipts.StatusProven {
				return false
			}
		}
		return true
	})
}
