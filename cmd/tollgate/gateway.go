package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

func init() {
	register(commands, "gateway", "run the OpenAI-compatible gateway (workers register with it)", runGateway)
}

// gatewayFlags are the flags shared by `gateway` and `dev`; each overrides
// the config file.
type gatewayFlags struct {
	configPath, listen, data, apiKey, adminKey, providerToken string
	openRegistration, noReceipts, noProver                    bool
}

func (g *gatewayFlags) register(fs *flag.FlagSet, defaultListen string) {
	fs.StringVar(&g.configPath, "config", "", "YAML config file (see README); flags override it")
	fs.StringVar(&g.listen, "listen", defaultListen, "address to serve the API on")
	fs.StringVar(&g.data, "data", "", "data directory (default ./data or the config's data_dir)")
	fs.StringVar(&g.apiKey, "api-key", "", "client API key (id \"default\"); env TOLLGATE_API_KEY")
	fs.StringVar(&g.adminKey, "admin-key", "", "admin key for /v1/workers and /v1/admin/*; env TOLLGATE_ADMIN_KEY")
	fs.StringVar(&g.providerToken, "provider-token", "", "token workers present to register; env TOLLGATE_PROVIDER_TOKEN")
	fs.BoolVar(&g.openRegistration, "open-registration", false, "accept any model version a worker names")
	fs.BoolVar(&g.noReceipts, "no-receipts", false, "turn receipts off (no ledger)")
	fs.BoolVar(&g.noProver, "no-prover", false, "record receipts but do not prove them in this process (the embedded ledger is single-process)")
}

// load merges file, flags and environment into one validated config.
func (g *gatewayFlags) load() (*config.Config, error) {
	cfg := config.Default()
	if g.configPath != "" {
		var err error
		if cfg, err = config.Load(g.configPath); err != nil {
			return nil, err
		}
	}
	if g.listen != "" {
		cfg.Listen = g.listen
	}
	if g.data != "" {
		cfg.DataDir = g.data
	}
	if k := firstNonEmpty(g.apiKey, os.Getenv("TOLLGATE_API_KEY")); k != "" {
		cfg.APIKeys = append(cfg.APIKeys, config.APIKey{ID: "default", Key: k})
	}
	if k := firstNonEmpty(g.adminKey, os.Getenv("TOLLGATE_ADMIN_KEY")); k != "" {
		cfg.AdminKeys = append(cfg.AdminKeys, k)
	}
	if t := firstNonEmpty(g.providerToken, os.Getenv("TOLLGATE_PROVIDER_TOKEN")); t != "" {
		cfg.ProviderTokens = append(cfg.ProviderTokens, t)
	}
	if g.openRegistration {
		cfg.OpenRegistration = true
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func runGateway(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate gateway", flag.ContinueOnError)
	var gf gatewayFlags
	gf.register(fs, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := gf.load()
	if err != nil {
		return err
	}
	logger := newLogger(cfg.Log)
	if len(cfg.APIKeys) == 0 {
		k := ids.New("sk-tg-")
		cfg.APIKeys = append(cfg.APIKeys, config.APIKey{ID: "default", Key: k})
		fmt.Fprintf(os.Stderr, "generated API key: %s\n", k)
	}
	if len(cfg.ProviderTokens) == 0 {
		t := ids.New("pt-")
		cfg.ProviderTokens = append(cfg.ProviderTokens, t)
		fmt.Fprintf(os.Stderr, "generated provider token (give it to workers): %s\n", t)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	gw, err := startGateway(cfg, ln, !gf.noReceipts, logger)
	if err != nil {
		ln.Close()
		return err
	}
	logger.Info("gateway listening", "url", gw.URL())
	if !gf.noProver {
		gw.startProver(ctx)
	}
	return gw.wait(ctx)
}

// gatewayStack is a serving gateway with its scheduler, registrar and
// (optional) receipts ledger.
type gatewayStack struct {
	cfg       *config.Config
	srv       *gateway.Server
	sched     *scheduler.Scheduler
	registrar *workers.Registrar
	ledger    *ledger.Ledger
	store     *ledger.BoltStore
	ln        net.Listener
	served    chan error
	logger    *slog.Logger
	// proverDone is closed when the in-process prover has stopped (nil
	// when none was started).
	proverDone   chan struct{}
	cancelProver context.CancelFunc
}

// startGateway wires config → scheduler, registrar, ledger, gateway and
// starts serving on ln.
func startGateway(cfg *config.Config, ln net.Listener, receiptsOn bool, logger *slog.Logger) (*gatewayStack, error) {
	g := &gatewayStack{cfg: cfg, ln: ln, served: make(chan error, 1), logger: logger}
	var err error
	g.sched, err = scheduler.New(cfg.Scheduler, scheduler.Deps{
		Logger: logger,
		Dial: func(url string) scheduler.Conn {
			return workers.NewClient(url, workers.ClientOptions{Logger: logger})
		},
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	models := make([]workers.ModelVersion, len(cfg.Models))
	for i, m := range cfg.Models {
		models[i] = m.Version()
	}
	g.registrar, err = workers.NewRegistrar(workers.RegistrarConfig{
		ProviderTokens:   cfg.ProviderTokens,
		OpenRegistration: cfg.OpenRegistration,
		Models:           models,
		Logger:           logger,
	})
	if err != nil {
		return nil, err
	}
	deps := gateway.Deps{
		Dispatcher:  g.sched,
		Registry:    g.sched,
		Registrar:   g.registrar,
		ListWorkers: func() any { return g.sched.Workers() },
		Logger:      logger,
	}
	if receiptsOn {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		g.store, err = ledger.OpenBolt(filepath.Join(cfg.DataDir, ledgerFile))
		if err != nil {
			return nil, fmt.Errorf("receipts ledger: %w", err)
		}
		g.ledger = ledger.New(g.store, ledger.Options{KeyDir: filepath.Join(cfg.DataDir, "keys"), Logger: logger})
		deps.Ledger = g.ledger
	}
	keys := make([]gateway.APIKey, len(cfg.APIKeys))
	for i, k := range cfg.APIKeys {
		keys[i] = gateway.APIKey{ID: k.ID, Key: k.Key, Deadline: k.Deadline.D(), Priority: k.PriorityClass()}
	}
	g.srv, err = gateway.New(gateway.Config{
		APIKeys:         keys,
		AdminKeys:       cfg.AdminKeys,
		BodyLimit:       cfg.BodyLimitBytes,
		Limits:          openai.Limits{MaxTokens: cfg.Limits.MaxTokens, MaxMessages: cfg.Limits.MaxMessages, MaxInputs: cfg.Limits.MaxInputs},
		DefaultDeadline: cfg.Timeouts.DefaultDeadline.D(),
		KeepAlive:       cfg.Timeouts.KeepAlive.D(),
		ReadTimeout:     cfg.Timeouts.Read.D(),
		IdleTimeout:     cfg.Timeouts.Idle.D(),
	}, deps)
	if err != nil {
		g.closeStore()
		return nil, err
	}
	go func() { g.served <- g.srv.Serve(ln) }()
	return g, nil
}

// URL is the gateway's base URL (without /v1).
func (g *gatewayStack) URL() string { return "http://" + g.ln.Addr().String() }

// wait serves until ctx ends (then shuts down gracefully) or serving fails.
func (g *gatewayStack) wait(ctx context.Context) error {
	select {
	case err := <-g.served:
		g.closeStore()
		return err
	case <-ctx.Done():
		return g.stop()
	}
}

// stop shuts the server down, letting in-flight streams finish within the
// configured bound, then stops the prover and closes the ledger.
func (g *gatewayStack) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeouts.Shutdown.D())
	defer cancel()
	g.logger.Info("gateway shutting down; in-flight requests may finish", "timeout", g.cfg.Timeouts.Shutdown.D())
	err := g.srv.Shutdown(ctx)
	if serr := <-g.served; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	if g.proverDone != nil {
		g.cancelProver()
		<-g.proverDone
	}
	return errors.Join(err, g.closeStore())
}

// startProver proves the ledger's receipts in this process (the embedded
// ledger cannot be shared with a separate `tollgate prover`). Development
// keys for the smallest batch capacity are set up in DATA/keys on first use,
// in the background, so serving starts at once; receipts stay pending until
// then.
func (g *gatewayStack) startProver(ctx context.Context) {
	if g.ledger == nil {
		return
	}
	ctx, g.cancelProver = context.WithCancel(context.WithoutCancel(ctx))
	g.proverDone = make(chan struct{})
	keyDir := filepath.Join(g.cfg.DataDir, "keys")
	go func() {
		defer close(g.proverDone)
		if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
			g.logger.Error("prover: development key set-up failed; receipts stay pending", "err", err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		g.logger.Info("prover started", "keys", keyDir)
		if err := prover.Run(ctx, g.ledger, prover.Config{KeyDir: keyDir, Logger: g.logger}); err != nil {
			g.logger.Error("prover stopped", "err", err)
		}
	}()
}

func (g *gatewayStack) closeStore() error {
	if g.store == nil {
		return nil
	}
	s := g.store
	g.store = nil
	return s.Close()
}

// waitReady blocks until a worker serves a model or ctx ends. It is only
// for start-up (dev, tests), not request handling.
func (g *gatewayStack) waitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for len(g.sched.Models()) == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no worker registered: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// newLogger builds the process logger from the config's log section.
func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
