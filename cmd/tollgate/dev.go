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

	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
)

func init() {
	register(commands, "dev", "gateway + one local worker on 127.0.0.1:8080 (what `make run` starts)", runDev)
}

// devOptions configure a dev stack.
type devOptions struct {
	gateway gatewayFlags
	engine  engineFlags
	logger  *slog.Logger
	// ln, when set, is used instead of listening on the configured address
	// (tests pass 127.0.0.1:0).
	ln net.Listener
	// backgroundKeys are development key capacities set up after start
	// when no --keys directory is given (`tollgate dev` sets 64 and 256;
	// tests leave it empty so no set-up outlives them).
	backgroundKeys []int
	// proverExe is keyPolicy.exe: this binary when run from the command
	// line (proving and key set-up in low-priority children); tests leave it
	// empty and prove in process.
	proverExe string
	// redisPrefix, when set, replaces the Redis key prefix (the soak runs
	// under a fresh one so that it never meets another deployment's keys).
	redisPrefix string
}

// devStack is a gateway with one worker registered over real HTTP loopback,
// exactly as a separate `tollgate worker` would.
type devStack struct {
	gw           *gatewayStack
	apiKey       string
	engineNote   string
	cancelWorker context.CancelFunc
	workerDone   chan error
	obs          *obs.Provider
	shutdownObs  func(context.Context) error
}

func runDev(ctx context.Context, args []string) error {
	var o devOptions
	fs := devFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The README's promise: capacity 8 at start, larger batches once their
	// keys are set up in the background, at the lowest CPU priority (43 s
	// for 256 leaves on an idle 2-core box, 2 min 43 s and 165 MiB for
	// 1,024), cached in DATA/keys for the next start.
	o.backgroundKeys = devBackgroundCapacities
	var err error
	if o.proverExe, err = proverExecutable(o.gateway.proverInProcess); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	applyGCDefault(slog.Default())
	d, err := startDev(ctx, o)
	if err != nil {
		return err
	}
	u := d.gw.URL()
	fmt.Fprintf(os.Stderr, "\nTollgate dev is serving %s/v1\n  engine:  %s\n  models:  %s\n  API key: %s\n  data:    %s\n\n  curl %s/v1/chat/completions -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \\\n    -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]}'\n\n",
		u, d.engineNote, modelNames(d.gw.sched.Models()), d.apiKey, d.gw.cfg.DataDir, u, d.apiKey, firstModel(d))
	<-ctx.Done()
	return d.stop()
}

func devFlagSet(o *devOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("tollgate dev", flag.ContinueOnError)
	o.gateway.register(fs, "127.0.0.1:8080", "text")
	o.engine.register(fs, "auto")
	return fs
}

func firstModel(d *devStack) string {
	if ms := d.gw.sched.Models(); len(ms) > 0 {
		return ms[0].Name
	}
	return ""
}

// sharedModelDir finds the built-in engine's default model:
// $TOLLGATE_SHARED/models/stories260K, else ../shared/models/stories260K.
func sharedModelDir() string {
	var cands []string
	if s := os.Getenv("TOLLGATE_SHARED"); s != "" {
		cands = append(cands, filepath.Join(s, "models", "stories260K"))
	}
	cands = append(cands, filepath.Join("..", "shared", "models", "stories260K"))
	for _, c := range cands {
		if st, err := os.Stat(filepath.Join(c, "stories260K.bin")); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// startDev starts the gateway, then one worker that registers with it over
// HTTP, and returns once the worker serves.
func startDev(ctx context.Context, o devOptions) (*devStack, error) {
	cfg, err := o.gateway.load()
	if err != nil {
		return nil, err
	}
	if o.redisPrefix != "" {
		cfg.Redis.Prefix = o.redisPrefix
	}
	logger := o.logger
	if logger == nil {
		if logger, err = o.gateway.obs.logger(cfg.Log, o.gateway.configPath != ""); err != nil {
			return nil, err
		}
	}
	// One provider for the gateway and the in-process worker: one
	// /metrics, and a request's spans on both sides share its trace.
	prov, shutdownObs, err := o.gateway.obs.setup(ctx, "tollgate-dev", logger)
	if err != nil {
		return nil, err
	}
	d := &devStack{obs: prov, shutdownObs: shutdownObs}
	started := false
	defer func() {
		if !started {
			d.closeObs()
		}
	}()
	// The key printed at start-up is one dev knows works: the one given
	// by --api-key or TOLLGATE_API_KEY, else a fresh dev key beside the
	// config file's (which are its secrets, maybe stored only as hashes).
	if d.apiKey = firstNonEmpty(o.gateway.apiKey, os.Getenv("TOLLGATE_API_KEY")); d.apiKey == "" {
		d.apiKey = ids.New("sk-dev-")
		cfg.APIKeys = append(cfg.APIKeys, config.APIKey{ID: "dev", Key: d.apiKey, Audit: true})
	}
	// The in-process worker's provider token never leaves the process.
	token := ids.New("pt-dev-")
	cfg.ProviderTokens = append(cfg.ProviderTokens, token)

	ef := o.engine
	switch ef.kind {
	case "auto":
		if dir := firstNonEmpty(ef.modelDir, sharedModelDir()); dir != "" {
			ef.kind, ef.modelDir = "llama", dir
		} else {
			ef.kind = "sim"
		}
	case "llama":
		ef.modelDir = firstNonEmpty(ef.modelDir, sharedModelDir())
	}
	eng, closeEng, err := openEngine(ef, logger)
	if err != nil {
		return nil, err
	}
	switch ef.kind {
	case "llama":
		d.engineNote = "built-in llama engine on " + ef.modelDir
	case "sim":
		d.engineNote = "simulator (profile " + ef.profile + "); no model directory found at $TOLLGATE_SHARED/models/stories260K or ../shared/models/stories260K"
		if o.engine.kind == "sim" {
			d.engineNote = "simulator (profile " + ef.profile + ")"
		}
	default:
		d.engineNote = ef.kind + " engine"
	}
	// Dev serves exactly what its own engine has: allow those versions.
	for _, m := range eng.Models() {
		cfg.Models = append(cfg.Models, config.Model{Name: m.Name, Digest: m.Digest, ContextLength: m.ContextLength, Embeddings: m.Embeddings, OwnedBy: m.OwnedBy})
	}
	if err := cfg.Validate(); err != nil {
		closeEng()
		return nil, err
	}

	ln := o.ln
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			closeEng()
			return nil, err
		}
	}
	opts := o.gateway.stack(cfg)
	kp := keyPolicy{allowDev: true, exe: o.proverExe} // dev allows development keys, with a warning
	if opts.receipts && !o.gateway.noProver {
		if kp.have, err = checkProvingKeys(opts.keyDir, true, logger); err != nil {
			ln.Close()
			closeEng()
			return nil, err
		}
		if !kp.have {
			logger.Warn("setting up development proving keys (single-party set-up: for development only)", "keys", opts.keyDir)
		}
		if o.gateway.keys == "" {
			kp.background = o.backgroundKeys
		}
	}
	d.gw, err = startGateway(cfg, ln, opts, logger, prov)
	if err != nil {
		ln.Close()
		closeEng()
		return nil, err
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "worker.key"), logger)
	if err != nil {
		d.gw.stop()
		closeEng()
		return nil, err
	}
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.gw.stop()
		closeEng()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancelWorker, d.workerDone = cancel, make(chan error, 1)
	go func() {
		err := runWorkerNode(wctx, wln, workerNode{
			gatewayURL: d.gw.URL(), providerToken: token, key: key, advertise: "http://" + wln.Addr().String(),
			engine: eng, dataDir: filepath.Join(cfg.DataDir, "worker"), logger: logger, obs: prov,
		})
		d.workerDone <- errors.Join(err, closeEng())
	}()
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := d.gw.waitReady(rctx); err != nil {
		d.stop()
		return nil, err
	}
	if !o.gateway.noProver {
		d.gw.startProver(ctx, kp)
	}
	started = true
	return d, nil
}

// devBackgroundCapacities are the development key capacities `tollgate dev`
// sets up after start.
var devBackgroundCapacities = []int{64, 256, 1024}

// URL is the gateway's base URL (without /v1).
func (d *devStack) URL() string { return d.gw.URL() }

// stop stops the prover first (no batch is cut for a worker about to
// leave; the backlog stays pending for the next start), drains the worker
// (its in-flight tasks finish and it deregisters while the gateway still
// serves), then shuts the gateway down.
func (d *devStack) stop() error {
	d.gw.stopProver()
	d.cancelWorker()
	werr := <-d.workerDone
	gerr := d.gw.stop()
	return errors.Join(werr, gerr, d.closeObs())
}

// closeObs flushes the spans once.
func (d *devStack) closeObs() error {
	f := d.shutdownObs
	d.shutdownObs = func(context.Context) error { return nil }
	return f(context.Background())
}
