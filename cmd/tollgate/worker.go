package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/httpguard"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/llama"
	oaengine "github.com/tollgate-ai/tollgate/workers/engine/openai"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
	"github.com/tollgate-ai/tollgate/workers/keys"
	"github.com/tollgate-ai/tollgate/workers/telemetry"
)

func init() {
	register(commands, "worker", "run a worker that registers with a gateway and serves its batches", runWorker)
}

// engineFlags choose and configure a worker's engine.
type engineFlags struct {
	kind           string // sim | llama | openai
	modelDir       string // llama
	profile        string // sim
	modelName      string // sim: served name; openai: served name
	timeScale      float64
	upstream       string // openai
	upstreamKey    string
	upstreamDigest string
	weights        string // openai: path to the served weights; its manifest digest names the version
	embeddings     bool   // openai: the upstream model also serves /v1/embeddings
	capabilities   string // openai: "all" (default), "none" or a list
}

func (e *engineFlags) register(fs *flag.FlagSet, defaultKind string) {
	fs.StringVar(&e.kind, "engine", defaultKind, "engine: sim (simulator), llama (built-in CPU engine) or openai (any OpenAI-compatible upstream)")
	fs.StringVar(&e.modelDir, "model", "", "llama: directory holding the checkpoint and tokenizer (stories260K.bin, tok512.bin)")
	fs.StringVar(&e.profile, "profile", sim.DefaultProfile, "sim: latency profile ("+strings.Join(profileNames(), ", ")+")")
	fs.StringVar(&e.modelName, "model-name", "", "served model name (sim: default the profile's model; openai: required)")
	fs.Float64Var(&e.timeScale, "time-scale", 1, "sim: multiply every simulated delay (0.01 = 100x faster)")
	fs.StringVar(&e.upstream, "upstream", "", "openai: upstream base URL, e.g. http://127.0.0.1:8000/v1")
	fs.StringVar(&e.upstreamKey, "upstream-key", "", "openai: upstream API key; env TOLLGATE_UPSTREAM_KEY")
	fs.StringVar(&e.upstreamDigest, "model-digest", "", "openai: SHA-256 (hex) of the served weights manifest (or give --weights)")
	fs.StringVar(&e.capabilities, "capabilities", "all", "openai: what the upstream serves beyond text: all, none, or a comma-separated list of "+task.CapabilityList(task.KnownCapabilities))
	fs.BoolVar(&e.embeddings, "embeddings", false, "openai: the upstream model also serves /v1/embeddings")
	fs.StringVar(&e.weights, "weights", "", "openai: the served model's weights (a directory or one GGUF/checkpoint file); its SHA-256 manifest becomes --model-digest")
}

func profileNames() []string {
	var names []string
	for n := range sim.Profiles() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// openEngine builds the chosen engine; close releases it.
func openEngine(e engineFlags, logger *slog.Logger) (eng task.Engine, close func() error, err error) {
	noop := func() error { return nil }
	switch e.kind {
	case "sim":
		p, ok := sim.Profiles()[e.profile]
		if !ok {
			return nil, nil, fmt.Errorf("--profile: unknown simulator profile %q (have %s)", e.profile, strings.Join(profileNames(), ", "))
		}
		s, err := sim.New(sim.Config{Model: e.modelName, Profile: p, TimeScale: e.timeScale})
		if err != nil {
			return nil, nil, err
		}
		return s, noop, nil
	case "llama":
		if e.modelDir == "" {
			return nil, nil, errors.New("--model DIR is required with --engine llama")
		}
		l, err := llama.Open(e.modelDir, llama.Options{ModelName: e.modelName, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return l, l.Close, nil
	case "openai":
		if e.weights != "" {
			d, err := workers.ManifestDigest(e.weights)
			if err != nil {
				return nil, nil, fmt.Errorf("--weights: %w", err)
			}
			if e.upstreamDigest != "" && e.upstreamDigest != d {
				return nil, nil, fmt.Errorf("--model-digest %s does not match the manifest of --weights (%s)", e.upstreamDigest, d)
			}
			e.upstreamDigest = d
		}
		if e.upstream == "" || e.modelName == "" || e.upstreamDigest == "" {
			return nil, nil, errors.New("--engine openai needs --upstream, --model-name and --model-digest or --weights")
		}
		var capsp *[]task.Capability // unset: the engine's default, all
		if e.capabilities != "" {
			caps, err := task.ParseCapabilities(e.capabilities)
			if err != nil {
				return nil, nil, fmt.Errorf("--capabilities: %w", err)
			}
			capsp = &caps
		}
		o, err := oaengine.New(oaengine.Config{
			BaseURL:      e.upstream,
			APIKey:       firstNonEmpty(e.upstreamKey, os.Getenv("TOLLGATE_UPSTREAM_KEY")),
			Models:       []task.ModelVersion{{Name: e.modelName, Digest: e.upstreamDigest, Embeddings: e.embeddings}},
			Capabilities: capsp,
			Logger:       logger,
		})
		if err != nil {
			return nil, nil, err
		}
		return o, noop, nil
	}
	return nil, nil, fmt.Errorf("--engine: %q is not sim, llama or openai", e.kind)
}

// loadOrCreateKey loads the worker key at path, creating it (0600) if absent.
func loadOrCreateKey(path string, logger *slog.Logger) (*keys.Key, error) {
	k, err := keys.Load(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if k, err = keys.Generate(nil); err != nil {
		return nil, err
	}
	if err := keys.Save(path, k); err != nil {
		return nil, err
	}
	logger.Info("created worker key", "path", path, "worker", k.WorkerID())
	return k, nil
}

func runWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate worker", flag.ContinueOnError)
	var ef engineFlags
	ef.register(fs, "sim")
	gatewayURL := fs.String("gateway", "http://127.0.0.1:8080", "gateway base URL")
	listen := fs.String("listen", "127.0.0.1:9090", "address the gateway sends batches to")
	advertise := fs.String("advertise", "", "URL the gateway reaches this worker at (default http://LISTEN)")
	keyFile := fs.String("key", "", "worker signing key file (default DATA/worker.key; created if missing)")
	data := fs.String("data", "./data/worker", "worker data directory (completion records, key)")
	token := fs.String("provider-token", "", "provider token issued by the gateway operator; env TOLLGATE_PROVIDER_TOKEN")
	maxConc := fs.Int("max-concurrency", 0, "tasks run at once on the engine (default 64)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	var of obsFlags
	of.register(fs, "json")
	var wl workerLinkFlags
	wl.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	logger, err := of.logger(config.Log{Level: *logLevel}, false)
	if err != nil {
		return err
	}
	applyGCDefault(logger)
	prov, shutdownObs, err := of.setup(ctx, "tollgate-worker", logger)
	if err != nil {
		return err
	}
	defer shutdownObs(context.WithoutCancel(ctx))
	tok := firstNonEmpty(*token, os.Getenv("TOLLGATE_PROVIDER_TOKEN"))
	obs.AddSecrets(tok) // never logged
	if tok == "" {
		return errors.New("--provider-token (or TOLLGATE_PROVIDER_TOKEN) is required")
	}
	if *keyFile == "" {
		*keyFile = filepath.Join(*data, "worker.key")
	}
	key, err := loadOrCreateKey(*keyFile, logger)
	if err != nil {
		return err
	}
	eng, closeEng, err := openEngine(ef, logger)
	if err != nil {
		return err
	}
	defer closeEng()
	link, err := wl.dialer(logger)
	if err != nil {
		return err
	}
	node := workerNode{
		gatewayURL: strings.TrimRight(*gatewayURL, "/"), providerToken: tok, key: key,
		engine: eng, maxConcurrency: *maxConc, dataDir: *data, logger: logger, obs: prov,
	}
	if link != nil {
		// Behind NAT: batches arrive on streams of the link the worker
		// dialled, and its calls to the gateway go out on it too. The link
		// outlives ctx by the node's drain, so deregistration still reaches
		// the gateway.
		linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
		linkDone := make(chan struct{})
		go func() { defer close(linkDone); runLink(linkCtx, link, logger) }()
		defer func() { stopLink(); <-linkDone }()
		node.gatewayURL, node.advertise = "http://gateway-link", workers.LinkOutbound
		node.httpClient = &http.Client{Transport: linkTransport(link), Timeout: 10 * time.Second}
		return runWorkerNode(ctx, link, node)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	node.advertise = *advertise
	if node.advertise == "" {
		node.advertise = "http://" + ln.Addr().String()
	}
	return runWorkerNode(ctx, ln, node)
}

// workerNode is everything a worker process (or dev's in-process worker)
// runs: agent, its HTTP handler, GPU telemetry and gateway membership.
type workerNode struct {
	gatewayURL, providerToken, advertise string
	key                                  *keys.Key
	engine                               task.Engine
	maxConcurrency                       int
	dataDir                              string
	logger                               *slog.Logger
	obs                                  *obs.Provider // nil: off
	httpClient                           *http.Client  // the worker's calls to the gateway (nil: the default)
}

// runWorkerNode serves the worker on ln and keeps it registered until ctx
// ends; then it drains (in-flight tasks finish), deregisters and stops.
func runWorkerNode(ctx context.Context, ln net.Listener, n workerNode) error {
	logger := n.logger // agent and member add the worker key themselves
	agent, err := workers.OpenAgent(workers.AgentConfig{
		WorkerID: n.key.WorkerID(), Engine: n.engine, MaxConcurrency: n.maxConcurrency,
		Logger: logger, DataDir: n.dataDir, Obs: n.obs,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("worker data %s: %w", n.dataDir, err)
	}
	defer agent.Close()
	gpus := telemetry.NewNVML(logger)
	defer gpus.Close()
	hostname, _ := os.Hostname()
	member, err := workers.NewRegisterer(workers.MemberConfig{
		GatewayURL: n.gatewayURL, ProviderToken: n.providerToken, Key: n.key,
		AdvertiseURL: n.advertise, Agent: agent, GPUs: gpus, Logger: logger, HTTPClient: n.httpClient,
	})
	if err != nil {
		ln.Close()
		return err
	}
	// Batches and cancels must carry the session token the gateway got at
	// registration; anyone else who can reach the port is refused (401).
	handler := workers.NewHandler(agent, logger,
		workers.WithLinkAuth(member.LinkToken),
		workers.WithRoute("GET /metrics", workerMetrics(gpus, hostname, n.obs)),
		workers.WithRoute("POST "+workers.PathCountersign, workers.NewCountersigner(n.key, agent, logger,
			workers.WithCountersignCredential(member.CountersignToken), workers.WithCountersignMetrics(n.obs.Metrics()))))
	// Idle link connections outlive the gateway's own idle limit (60 s,
	// internal/h1), so the gateway, not the worker, retires them.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	// Ambiguous framing (request smuggling) is refused before net/http
	// parses it, as on the gateway.
	go func() { served <- srv.Serve(httpguard.Listener(ln, httpguard.Limits{})) }()
	logger.Info("worker serving", "worker", n.key.WorkerID(), "listen", ln.Addr().String(), "advertise", n.advertise, "gateway", n.gatewayURL,
		"models", modelNames(n.engine.Models()))

	memberErr := member.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if errors.Is(memberErr, context.Canceled) {
		memberErr = nil
	}
	return errors.Join(memberErr, err)
}

// workerMetrics serves the worker's GPU telemetry (DCGM exporter names)
// and its own metrics (batches, tasks, engine) as one Prometheus text
// exposition; the two sets share no metric name.
func workerMetrics(gpus telemetry.Source, hostname string, prov *obs.Provider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := errors.Join(telemetry.WriteDCGM(&buf, gpus, hostname), prov.WriteMetrics(&buf)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		buf.WriteTo(w)
	})
}

func modelNames(ms []task.ModelVersion) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return strings.Join(names, ",")
}
