package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/lowprio"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/responses"
	"github.com/tollgate-ai/tollgate/internal/statuspage"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

func init() {
	register(commands, "gateway", "run the OpenAI-compatible gateway (workers register with it)", runGateway)
}

// obsFlags configure observability for every serving subcommand.
type obsFlags struct {
	otlpEndpoint, logFormat, defaultLogFormat string
	noMetrics                                 bool
	// options are added by tests (an in-memory span exporter).
	options []obs.Option
}

func (o *obsFlags) register(fs *flag.FlagSet, defaultLogFormat string) {
	o.defaultLogFormat = defaultLogFormat
	fs.StringVar(&o.otlpEndpoint, "otlp-endpoint", "", "export traces over OTLP/HTTP to this collector (URL or host:port, e.g. http://127.0.0.1:4318); empty: tracing off; env OTEL_EXPORTER_OTLP_ENDPOINT")
	fs.StringVar(&o.logFormat, "log-format", "", "log format: json or text (default "+defaultLogFormat+", or the config file's log.format)")
	fs.BoolVar(&o.noMetrics, "no-metrics", false, "turn the Prometheus metrics on /metrics off")
}

// setup validates the flags and builds the process's one obs.Provider:
// Prometheus metrics on unless --no-metrics, tracing only with an OTLP
// endpoint (or a test's exporter). The returned shutdown flushes spans.
func (o *obsFlags) setup(ctx context.Context, service string, logger *slog.Logger) (*obs.Provider, func(context.Context) error, error) {
	cfg := obs.Config{
		ServiceName:  service,
		OTLPEndpoint: firstNonEmpty(o.otlpEndpoint, os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")),
		Prometheus:   !o.noMetrics,
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	return obs.Setup(ctx, cfg, append([]obs.Option{obs.WithLogger(logger)}, o.options...)...)
}

// logger builds the process logger (JSON or text; every line logged with a
// request's context carries its request_id and trace_id).
func (o *obsFlags) logger(c config.Log, fromFile bool) (*slog.Logger, error) {
	lc := obs.LogConfig{Format: c.Format, Level: c.Level}
	switch {
	case o.logFormat != "":
		lc.Format = o.logFormat
	case !fromFile:
		lc.Format = o.defaultLogFormat
	}
	if err := lc.Validate(); err != nil {
		return nil, fmt.Errorf("--log-format: %w", err)
	}
	return obs.Logger(lc), nil
}

// gatewayFlags are the flags shared by `gateway` and `dev`; each overrides
// the config file.
type gatewayFlags struct {
	configPath, listen, data, apiKey, adminKey, providerToken, redisURL string
	keys, operatorKey, corsOrigins                                      string
	openRegistration, noReceipts, noProver, allowDevKeys, pprof         bool
	proverInProcess                                                     bool
	obs                                                                 obsFlags
}

func (g *gatewayFlags) register(fs *flag.FlagSet, defaultListen, defaultLogFormat string) {
	g.obs.register(fs, defaultLogFormat)
	fs.StringVar(&g.configPath, "config", "", "YAML config file (see README); flags override it")
	// The flag has no default of its own, so that only an explicit
	// --listen overrides the config file; without either, config.Default's.
	listenHelp := "address to serve the API on (default: the config's listen"
	if defaultListen != "" {
		listenHelp += ", else " + defaultListen
	}
	fs.StringVar(&g.listen, "listen", "", listenHelp+")")
	fs.StringVar(&g.data, "data", "", "data directory (default ./data or the config's data_dir)")
	fs.StringVar(&g.apiKey, "api-key", "", "client API key (id \"default\"); env TOLLGATE_API_KEY")
	fs.StringVar(&g.adminKey, "admin-key", "", "admin key for /v1/workers and /v1/admin/*; env TOLLGATE_ADMIN_KEY")
	fs.StringVar(&g.providerToken, "provider-token", "", "token workers present to register; env TOLLGATE_PROVIDER_TOKEN")
	fs.BoolVar(&g.openRegistration, "open-registration", false, "accept any model version a worker names")
	fs.BoolVar(&g.pprof, "pprof", false, "serve Go's runtime profiles under /debug/pprof to admin keys (config: pprof)")
	fs.BoolVar(&g.noReceipts, "no-receipts", false, "turn receipts off (no ledger)")
	fs.BoolVar(&g.noProver, "no-prover", false, "record receipts but do not prove them in this process (the embedded ledger is single-process)")
	fs.BoolVar(&g.proverInProcess, "prover-in-process", false, "prove inside this process at normal priority; by default the in-process prover (and development key set-up) runs its CPU work in a child process at the lowest CPU priority (nice 19), so it uses only what serving leaves idle")
	fs.StringVar(&g.redisURL, "redis", "", "share the worker registry, rate limits, receipt ledger and proving queue with other replicas through this Redis (redis://host:port/db); env TOLLGATE_REDIS_URL")
	fs.StringVar(&g.keys, "keys", "", "proving and verifying key directory (default DATA/keys), e.g. ceremony keys from `tollgate keys ceremony`")
	fs.StringVar(&g.corsOrigins, "cors-origins", "", "comma-separated origins (scheme://host[:port], or *) whose web pages may call the API from a browser; replaces the config's cors.allowed_origins; default off")
	fs.StringVar(&g.operatorKey, "operator-key", "", "operator key file (ed25519) that signs the registry root history (default DATA/operator.key, created if missing, public half beside it as .pub; replicas sharing a Redis must use the same file)")
}

// stack is what startGateway needs from the flags.
func (g *gatewayFlags) stack(cfg *config.Config) stackOptions {
	return stackOptions{receipts: !g.noReceipts, keyDir: firstNonEmpty(g.keys, filepath.Join(cfg.DataDir, "keys")),
		operatorKey: firstNonEmpty(g.operatorKey, filepath.Join(cfg.DataDir, operatorKeyFile))}
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
	if g.pprof {
		cfg.Pprof = true
	}
	if u := firstNonEmpty(g.redisURL, os.Getenv("TOLLGATE_REDIS_URL")); u != "" {
		cfg.Redis.URL = u
	}
	if g.corsOrigins != "" {
		cfg.CORS.AllowedOrigins = nil
		for _, o := range strings.Split(g.corsOrigins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.CORS.AllowedOrigins = append(cfg.CORS.AllowedOrigins, o)
			}
		}
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
	gf.register(fs, "", "json")
	fs.BoolVar(&gf.allowDevKeys, "allow-dev-keys", false, "let the prover use development keys (single-party set-up: whoever ran it can forge receipts), setting up capacity-8 ones in DATA/keys if there are none")
	var lf linkFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := gf.load()
	if err != nil {
		return err
	}
	logger, err := gf.obs.logger(cfg.Log, gf.configPath != "")
	if err != nil {
		return err
	}
	applyGCDefault(logger)
	link, apiTLS, err := lf.server(logger)
	if err != nil {
		return err
	}
	prov, shutdownObs, err := gf.obs.setup(ctx, "tollgate-gateway", logger)
	if err != nil {
		return err
	}
	defer shutdownObs(context.WithoutCancel(ctx))
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
	opts := gf.stack(cfg)
	kp := keyPolicy{allowDev: gf.allowDevKeys}
	if kp.exe, err = proverExecutable(gf.proverInProcess); err != nil {
		return err
	}
	if opts.receipts && !gf.noProver {
		// Refuse development keys before serving anything.
		if kp.have, err = checkProvingKeys(opts.keyDir, gf.allowDevKeys, logger); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	if apiTLS != nil {
		ln = tls.NewListener(ln, apiTLS)
	}
	opts.link = link
	gw, err := startGateway(cfg, ln, opts, logger, prov)
	if err != nil {
		ln.Close()
		return err
	}
	logger.Info("gateway listening", "url", gw.URL(), "tls", apiTLS != nil)
	if link != nil {
		defer link.Close()
		if err := lf.serve(link, gw.srv, logger); err != nil {
			gw.stop()
			return err
		}
	}
	if !gf.noProver {
		gw.startProver(ctx, kp)
	}
	return gw.wait(ctx)
}

// stackOptions configure startGateway beyond the config file.
type stackOptions struct {
	receipts    bool   // record receipts (a ledger)
	keyDir      string // proving and verifying keys (default DATA/keys)
	operatorKey string // operator key file (default DATA/operator.key, created if missing)
	// link holds the sessions of workers that dialled in (nil: none); a
	// link:// worker's batches go over its session.
	link *workerlink.Server
}

// gatewayStack is a serving gateway with its scheduler, registrar and
// (optional) receipts ledger.
type gatewayStack struct {
	cfg       *config.Config
	keyDir    string
	srv       *gateway.Server
	sched     *scheduler.Scheduler
	registrar *workers.Registrar
	ledger    *ledger.Ledger
	store     ledger.Store
	// responses is the embedded /v1/responses store (nil: off, or Redis).
	responses *responses.BoltStore
	// redis is the shared state of the Redis mode (nil: embedded).
	redis      *redisMode
	stopShared context.CancelFunc
	sharedDone chan struct{}
	ln         net.Listener
	served     chan error
	logger     *slog.Logger
	obs        *obs.Provider
	// link is the outbound worker link (nil: off): the in-process prover
	// countersigns link:// workers' batches over it.
	link *workerlink.Server
	// proverDone is closed when the in-process prover has stopped (nil
	// when none was started).
	proverDone   chan struct{}
	cancelProver context.CancelFunc
	// auditor re-executes sampled requests (nil: audits off); stopAuditor
	// ends it and waits.
	auditor     *audit.Auditor
	stopAuditor func()
}

// startGateway wires config → scheduler, registrar, ledger, gateway and
// starts serving on ln.
// prov (nil: off) traces and measures all of them.
func startGateway(cfg *config.Config, ln net.Listener, opts stackOptions, logger *slog.Logger, prov *obs.Provider) (*gatewayStack, error) {
	opts.keyDir = firstNonEmpty(opts.keyDir, filepath.Join(cfg.DataDir, "keys"))
	opts.operatorKey = firstNonEmpty(opts.operatorKey, filepath.Join(cfg.DataDir, operatorKeyFile))
	g := &gatewayStack{cfg: cfg, keyDir: opts.keyDir, ln: ln, served: make(chan error, 1), logger: logger, obs: prov, link: opts.link}
	var err error
	g.sched, err = scheduler.New(cfg.Scheduler, scheduler.Deps{
		Logger: logger,
		Obs:    prov,
		// The link presents the worker's session token (the worker's
		// handler refuses batches without it); a new session re-dials.
		DialWorker: func(w *task.Registered) scheduler.Conn {
			co := workers.ClientOptions{Logger: logger, Token: w.SessionToken, Obs: prov,
				Records: recordPolicy(cfg.Records, w)} // every completion record is checked (internal/config Records)
			if session, ok := workers.LinkSession(w.URL); ok && opts.link != nil {
				co.Dial = func(ctx context.Context) (net.Conn, error) { return opts.link.Dial(ctx, session) }
			}
			return workers.NewClient(w.URL, co)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	models := make([]task.ModelVersion, len(cfg.Models))
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
		Obs:         prov,
		Status:      schedulerStatus{g.sched},
		// Configured and admin-allowed models answer 503 (not 404) while
		// workers re-register after a restart.
		KnownModels: knownModels(g.registrar),
	}
	if cfg.Redis.Enabled() {
		if g.redis, err = openRedisMode(cfg, g.sched, logger); err != nil {
			return nil, err
		}
		deps.Registry = g.redis.registry
		deps.Registrar = sharedSessions{g.registrar, g.redis.registry}
		deps.RateLimiter = g.redis.limiter(cfg, logger)
		deps.Readiness = g.redis.readiness()
		ctx, cancel := context.WithCancel(context.Background())
		g.stopShared, g.sharedDone = cancel, make(chan struct{})
		go func() {
			defer close(g.sharedDone)
			g.redis.registry.Run(ctx)
		}()
		logger.Info("redis mode: registry, rate limits, receipts and proving queue are shared", "prefix", cfg.Redis.Prefix)
	}
	if opts.receipts {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			g.closeStore()
			return nil, err
		}
		operator, err := loadOrCreateOperatorKey(opts.operatorKey, logger)
		if err != nil {
			g.closeStore()
			return nil, err
		}
		if g.redis != nil {
			g.store, err = g.redis.openLedger(cfg, logger)
		} else {
			g.store, err = openBoltStore(filepath.Join(cfg.DataDir, ledgerFile))
		}
		if err != nil {
			g.closeStore()
			return nil, fmt.Errorf("receipts ledger: %w", err)
		}
		g.ledger = ledger.New(g.store, ledger.Options{KeyDir: opts.keyDir, Logger: logger, Metrics: prov.Metrics(), Operator: operator})
		deps.Ledger = g.ledger
		deps.Receipts = ledgerCounts{g.ledger}
		led := g.ledger
		prov.Metrics().ObserveReceipts(func(ctx context.Context) (obs.ReceiptCounts, error) {
			c, err := led.Counts(ctx)
			return obs.ReceiptCounts(c), err
		})
		backlog := &backlogAge{ledger: led}
		prov.Metrics().ObserveBacklog(backlog.get)
		if max := cfg.MaxPendingAge.D(); max > 0 {
			deps.Readiness = append(deps.Readiness, backlog.readiness(max))
		}
	}
	if err := g.openResponses(cfg, &deps); err != nil {
		g.closeStore()
		return nil, err
	}
	if err := g.startAuditor(&deps); err != nil {
		g.closeStore()
		return nil, err
	}
	keys := make([]gateway.APIKey, len(cfg.APIKeys))
	for i, k := range cfg.APIKeys {
		keys[i] = gateway.APIKey{ID: k.ID, Key: k.Key, Deadline: k.Deadline.D(), Priority: k.PriorityClass(),
			RequestsPerMinute: k.RequestsPerMinute, TokensPerMinute: k.TokensPerMinute, Audit: k.Audit}
		if k.Billing() {
			keys[i].Role = gateway.RoleBilling
		}
	}
	g.srv, err = gateway.New(gateway.Config{
		APIKeys:         keys,
		AdminKeys:       cfg.AdminKeys,
		Pprof:           cfg.Pprof,
		BodyLimit:       cfg.BodyLimitBytes,
		Limits:          openai.Limits{MaxTokens: cfg.Limits.MaxTokens, MaxMessages: cfg.Limits.MaxMessages, MaxInputs: cfg.Limits.MaxInputs},
		DefaultDeadline: cfg.Timeouts.DefaultDeadline.D(),
		KeepAlive:       cfg.Timeouts.KeepAlive.D(),
		ReadTimeout:     cfg.Timeouts.Read.D(),
		IdleTimeout:     cfg.Timeouts.Idle.D(),
		CORS:            cfg.CORS.Policy(),
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

// stop stops the prover (it cuts no more batches; the backlog stays
// pending for the next start), shuts the server down, letting in-flight
// streams finish within the configured bound, and closes the ledger.
func (g *gatewayStack) stop() error {
	g.stopProver()
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeouts.Shutdown.D())
	defer cancel()
	g.logger.Info("gateway shutting down; in-flight requests may finish", "timeout", g.cfg.Timeouts.Shutdown.D())
	err := g.srv.Shutdown(ctx)
	if serr := <-g.served; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	if g.stopAuditor != nil {
		g.stopAuditor()
	}
	return errors.Join(err, g.closeStore())
}

// stopProver stops the in-process prover, if any, and waits for it.
func (g *gatewayStack) stopProver() {
	if g.proverDone != nil {
		g.cancelProver()
		<-g.proverDone
	}
}

// keyPolicy says which proving keys the in-process prover may use.
type keyPolicy struct {
	// allowDev accepts development (single-party) keys, and sets up
	// capacity-8 ones in the key directory when there are none.
	allowDev bool
	// have: the key directory already holds keys (checkProvingKeys).
	have bool
	// background are capacities to set up as development keys after the
	// prover starts (`tollgate dev`); the prover picks them up on its next
	// key rescan.
	background []int
	// exe, when set, is this binary: proofs are made by its `prove-child`
	// and background key set-up by its `keys setup`, each a child process
	// at the lowest CPU priority (lowprio), so they take only the CPU
	// serving leaves idle. Empty (--prover-in-process, and tests): both run
	// in this process at normal priority.
	exe string
}

// proverExecutable is keyPolicy.exe for the command line: this binary,
// unless inProcess.
func proverExecutable(inProcess bool) (string, error) {
	if inProcess {
		return "", nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find this binary to prove in a low-priority child (pass --prover-in-process): %w", err)
	}
	return exe, nil
}

// checkProvingKeys looks at the verifying keys in dir: it refuses
// development keys (a header not naming an MPC ceremony) unless allowDev,
// and a directory without keys unless allowDev (then they are set up). It
// reports whether dir holds keys.
func checkProvingKeys(dir string, allowDev bool, logger *slog.Logger) (bool, error) {
	var found, dev []string
	for _, c := range zk.Capacities {
		_, vkPath := zk.KeyFiles(dir, c)
		b, err := os.ReadFile(vkPath)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		vk, err := receipts.ParseVerifyingKey(b)
		if err != nil {
			return false, fmt.Errorf("%s: %w", vkPath, err)
		}
		found = append(found, vkPath)
		if receipts.IsDevKey(vk.Header) {
			dev = append(dev, vkPath)
		}
	}
	switch {
	case len(dev) > 0 && !allowDev:
		return false, fmt.Errorf("%s: development keys (single-party set-up: whoever ran it can forge receipts); use ceremony keys (`tollgate keys ceremony`, --keys DIR) or pass --allow-dev-keys", strings.Join(dev, ", "))
	case len(found) == 0 && !allowDev:
		return false, fmt.Errorf("no proving keys in %s: pass --keys DIR with ceremony keys (`tollgate keys ceremony`), --allow-dev-keys to set up development keys, or --no-prover", dir)
	case len(dev) > 0:
		logger.Warn("proving with development keys (single-party set-up): receipts are for development only; `tollgate verify` refuses them without --allow-dev-keys", "keys", dir)
	}
	return len(found) > 0, nil
}

// startProver proves the ledger's receipts in this process (the embedded
// ledger cannot be shared with a separate `tollgate prover`). When the key
// directory is empty (and kp allows development keys) capacity-8
// development keys are set up first, in the background, so serving starts
// at once; receipts stay pending until then. kp.background capacities are
// set up afterwards and picked up by the running prover.
func (g *gatewayStack) startProver(ctx context.Context, kp keyPolicy) {
	if g.ledger == nil {
		return
	}
	ctx, g.cancelProver = context.WithCancel(context.WithoutCancel(ctx))
	g.proverDone = make(chan struct{})
	keyDir := g.keyDir
	l := g.ledger
	if g.redis != nil {
		// Join the shared proving queue: the prover needs the Redis store
		// itself (the queue), not the gateway's spool in front of it.
		l = ledger.New(g.redis.store, ledger.Options{KeyDir: keyDir, Logger: g.logger})
	}
	go func() {
		defer close(g.proverDone)
		if !kp.have {
			if !kp.allowDev {
				g.logger.Error("prover: no proving keys; receipts stay pending", "keys", keyDir)
				return
			}
			if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
				g.logger.Error("prover: development key set-up failed; receipts stay pending", "err", err)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if len(kp.background) > 0 {
			go setUpDevKeys(ctx, keyDir, kp.background, kp.exe, g.logger)
		}
		pc := prover.Config{KeyDir: keyDir, Logger: proverLogger(g.logger), Obs: g.obs, ClaimIdle: g.cfg.Redis.ClaimIdle.D()}
		if kp.exe != "" {
			pc.Child = newProveChild(kp.exe, keyDir, g.logger)
			defer pc.Child.Close()
			// A stop kills a proof in flight at once (a killed prover stores
			// nothing: the batch is proven again after the restart).
			go func() {
				<-ctx.Done()
				pc.Child.Close()
			}()
		}
		g.logger.Info("prover started", "keys", keyDir, "low_priority_child", pc.Child != nil)
		if g.link != nil {
			pc.LinkDial = g.link.Dial
		}
		if err := prover.Run(ctx, l, pc); err != nil {
			g.logger.Error("prover stopped", "err", err)
		}
	}()
}

// setUpDevKeys sets up development keys for capacities one after another
// (each takes from seconds to minutes and all cores), stopping between
// them once ctx ends. With exe each runs as `exe keys setup` at the lowest
// CPU priority (killed when ctx ends); without, in this process. A set-up
// cut short leaves no partial key (keys are written atomically).
func setUpDevKeys(ctx context.Context, dir string, capacities []int, exe string, logger *slog.Logger) {
	for _, c := range capacities {
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		var err error
		if exe == "" {
			err = zk.EnsureDevKeys(dir, c)
		} else {
			err = setUpDevKeysChild(ctx, exe, dir, c)
		}
		if err != nil {
			if ctx.Err() == nil {
				logger.Warn("background development key set-up failed", "capacity", c, "err", err)
			}
			return
		}
		logger.Info("development keys ready; the prover picks them up within a minute", "capacity", c, "took", time.Since(start).Round(time.Second), "low_priority_child", exe != "")
	}
}

// setUpDevKeysChild runs `exe keys setup` for one capacity at the lowest
// CPU priority (it skips a capacity whose keys exist).
func setUpDevKeysChild(ctx context.Context, exe, dir string, capacity int) error {
	cmd := exec.CommandContext(ctx, exe, "keys", "setup", "-dir", dir, "-capacity", strconv.Itoa(capacity))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setParentDeathSignal(cmd)
	p, err := lowprio.Start(cmd)
	if err != nil {
		return err
	}
	if err := p.Wait(); err != nil {
		return fmt.Errorf("%s keys setup: %w: %s", exe, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// newProveChild is the prover's low-priority child: `exe prove-child`,
// its log lines on this process's standard error.
func newProveChild(exe, keyDir string, logger *slog.Logger) *zk.Child {
	return zk.NewChild(func() *exec.Cmd {
		cmd := exec.Command(exe, "prove-child", "-keys", keyDir)
		cmd.Stderr = os.Stderr
		setParentDeathSignal(cmd)
		return cmd
	}, func(cmd *exec.Cmd) (func() error, error) {
		p, err := lowprio.Start(cmd)
		if err != nil {
			return nil, err
		}
		if !p.Lowered {
			logger.Warn("proving child runs at normal priority: this platform cannot lower it")
		}
		return p.Wait, nil
	}, logger)
}

// operatorKeyFile is the operator key's default name in the data directory.
const operatorKeyFile = "operator.key"

// loadOrCreateOperatorKey loads the operator key at path, creating it
// (0600, never overwritten) with its public half in path.pub if absent.
// Only the path and the public key are logged.
func loadOrCreateOperatorKey(path string, logger *slog.Logger) (*receipts.OperatorKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := receipts.ReadOperatorKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		logger.Info("operator key", "path", path, "public_key", k.PublicHex())
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := receipts.GenerateOperatorKey(nil)
	if err != nil {
		return nil, err
	}
	if err := writeOperatorKeyFiles(path, k); err != nil {
		return nil, err
	}
	logger.Info("created operator key", "path", path, "public_key", k.PublicHex(), "public_key_file", path+".pub")
	return k, nil
}

// writeOperatorKeyFiles writes k to path (0600, which must not exist) and
// its public half to path.pub (0644).
func writeOperatorKeyFiles(path string, k *receipts.OperatorKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := receipts.WriteOperatorKey(f, k); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var pub bytes.Buffer
	if err := receipts.WriteOperatorPublicKey(&pub, k.Public()); err != nil {
		return err
	}
	return os.WriteFile(path+".pub", pub.Bytes(), 0o644)
}

// closeStore stops the registry sync and closes the ledger and the Redis
// client (each once).
func (g *gatewayStack) closeStore() error {
	if g.responses != nil {
		if err := g.responses.Close(); err != nil {
			g.logger.Error("responses store not closed cleanly", "err", err)
		}
		g.responses = nil
	}
	if g.stopShared != nil {
		g.stopShared()
		<-g.sharedDone
		g.stopShared = nil
	}
	var err error
	if g.redis != nil {
		err = g.redis.close() // closes the ledger's stores too
		g.redis, g.store = nil, nil
	}
	if g.store == nil {
		return err
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

// schedulerStatus shows the scheduler's registry on the status page.
type schedulerStatus struct{ s *scheduler.Scheduler }

func (st schedulerStatus) StatusWorkers() []statuspage.Worker {
	ws := st.s.Workers()
	out := make([]statuspage.Worker, len(ws))
	for i, w := range ws {
		sw := statuspage.Worker{
			ID: w.WorkerID, URL: w.URL, Healthy: w.Healthy, Draining: w.Draining, LastHeartbeat: w.LastHeartbeat,
			InFlight: w.Assigned, MaxConcurrency: w.Slots, GPUs: w.GPUs, Disputed: w.Disputed != "",
		}
		for _, m := range w.Models {
			sw.Models = append(sw.Models, m.Name)
		}
		if hb := w.Telemetry; hb != nil {
			sw.Load = hb.Load
			if len(hb.GPUs) > 0 {
				sw.GPUs = hb.GPUs
			}
		}
		out[i] = sw
	}
	return out
}

func (st schedulerStatus) StatusLoad() statuspage.Load {
	s := st.s.Stats()
	return statuspage.Load{QueueLength: s.QueueLength, InFlight: s.InFlight}
}

// ledgerCounts shows the receipts backlog on the status page.
type ledgerCounts struct{ l *ledger.Ledger }

func (lc ledgerCounts) ReceiptCounts(ctx context.Context) (statuspage.Receipts, error) {
	c, err := lc.l.Counts(ctx)
	return statuspage.Receipts{Pending: c.Pending, Proven: c.Proven, Failed: c.Failed}, err
}

// recordPolicy is the record policy for a link to the registered worker w,
// from the config's records section.
func recordPolicy(r config.Records, w *task.Registered) workers.RecordPolicy {
	return workers.RecordPolicy{WorkerID: w.WorkerID, Models: w.Models, Skew: r.ClockSkew.D(), Bounds: r.BoundsFor}
}

// responsesFile is the embedded /v1/responses store inside a data directory.
const responsesFile = "responses.db"

// openResponses opens the store behind /v1/responses (config responses):
// Redis in the Redis mode, so every replica serves every key's responses,
// else a bbolt file in the data directory.
func (g *gatewayStack) openResponses(cfg *config.Config, deps *gateway.Deps) error {
	if !cfg.Responses.On() {
		return nil
	}
	ret := responses.Retention{TTL: cfg.Responses.TTL.D(), MaxResponses: cfg.Responses.MaxResponses, MaxBytes: cfg.Responses.MaxBytes}
	if g.redis != nil {
		deps.Responses = responses.NewRedis(g.redis.client, cfg.Redis.Prefix+"responses:", ret, nil)
		return nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	st, err := responses.OpenBolt(filepath.Join(cfg.DataDir, responsesFile), ret, nil)
	if err != nil {
		return err
	}
	g.responses, deps.Responses = st, st
	return nil
}
