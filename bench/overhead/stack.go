package overhead

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/scheduler"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/openai"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// Stack is a running Tollgate: a gateway and one worker whose engine
// forwards to an OpenAI-compatible upstream, in this process but linked
// the way a deployment links them: the client reaches the gateway over a
// loopback socket (fasthttp), and the scheduler reaches the worker over
// another (the production worker link: internal/h1 on the gateway's side,
// net/http on the worker's).
type Stack struct {
	// URL is the gateway's base URL, ending in /v1.
	URL string
	// APIKey is the bearer key the gateway accepts.
	APIKey string
	// Scheduler is the gateway's dispatcher (for inspection).
	Scheduler *scheduler.Scheduler

	gw        *gateway.Server
	gwDone    chan error
	store     *ledger.WALStore // receipts on
	tempDir   string           // removed by Close
	workerSrv *http.Server
	link      *outboundLink // OutboundLink
	agent     *workers.Agent
	engine    *openai.Engine
	stopBeats context.CancelFunc
	beatsDone chan struct{}
}

// StackConfig configures StartStack.
type StackConfig struct {
	// UpstreamURL is the OpenAI base URL the worker's engine forwards to.
	UpstreamURL string
	// Model is the served model name (the upstream must know it).
	Model string
	// MaxConcurrency is the worker's slot count (default 1024).
	MaxConcurrency int
	// InProcessWorker links the scheduler straight to the worker agent,
	// leaving out the worker transport (a diagnostic: it splits the
	// gateway's share of the added latency from the worker link's).
	InProcessWorker bool
	// OutboundLink runs the worker link the way a worker behind NAT has it
	// (--gateway-link): the worker dials the gateway's worker port over TLS
	// and the scheduler's batches go over yamux streams of that connection,
	// instead of the gateway dialling the worker over HTTP.
	OutboundLink bool
	// Receipts runs the stack as shipped: every response waits for its
	// receipt in the embedded ledger (the write-ahead log in front of
	// bbolt, fsync'd, in DataDir), the worker keeps its completion records
	// durably there too, and the link checks every record (RecordPolicy).
	// No prover runs in the stack: the README's deployment runs it apart.
	Receipts bool
	// DataDir holds the ledger and the worker's records (default: a
	// temporary directory, removed by Close).
	DataDir string
	Logger  *slog.Logger
}

// InProcessConn links a scheduler straight to an agent in the same
// process, without the worker transport.
type InProcessConn struct{ Agent *workers.Agent }

var _ scheduler.Conn = InProcessConn{}

// Run runs the batch on the agent, passing its events on.
func (c InProcessConn) Run(ctx context.Context, b *task.Batch, onEvent func(task.Event)) error {
	return c.Agent.RunBatch(ctx, b, func(ev task.Event) error { onEvent(ev); return nil })
}

// Cancel stops one task of a running batch.
func (c InProcessConn) Cancel(_ context.Context, batchID string, index int) error {
	c.Agent.Cancel(batchID, index)
	return nil
}

// heartbeatEvery is how often the in-process worker reports to the
// scheduler, as workers.RunMember would over HTTP.
const heartbeatEvery = 500 * time.Millisecond

// StartStack starts a gateway and a worker on fresh 127.0.0.1 ports. The
// worker joins the scheduler directly (Upsert) and heartbeats to it in
// process: registration's challenge and signature are one-off costs that
// play no part in the per-request path measured here.
func StartStack(ctx context.Context, cfg StackConfig) (st *Stack, err error) {
	if cfg.UpstreamURL == "" || cfg.Model == "" {
		return nil, errors.New("overhead: StackConfig needs UpstreamURL and Model")
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = 1024
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	digest := sha256.Sum256([]byte("tollgate-bench/" + cfg.Model))
	engine, err := openai.New(openai.Config{
		BaseURL:  cfg.UpstreamURL,
		Models:   []task.ModelVersion{{Name: cfg.Model, Digest: hex.EncodeToString(digest[:]), OwnedBy: "bench"}},
		MaxConns: cfg.MaxConcurrency,
		Logger:   logger,
	})
	if err != nil {
		return nil, fmt.Errorf("overhead: %w", err)
	}
	st = &Stack{engine: engine}
	defer func() {
		if err != nil {
			st.Close(context.Background())
		}
	}()
	key, err := keys.Generate(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("overhead: worker key: %w", err)
	}
	var led *ledger.Ledger
	agentCfg := workers.AgentConfig{WorkerID: key.WorkerID(), Engine: engine, MaxConcurrency: cfg.MaxConcurrency, Logger: logger}
	if cfg.Receipts {
		dir := cfg.DataDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "tollgate-bench-overhead-"); err != nil {
				return nil, fmt.Errorf("overhead: data dir: %w", err)
			}
			st.tempDir = dir
		}
		if st.store, err = ledger.OpenWAL(filepath.Join(dir, "receipts.db"), ledger.WALOptions{}); err != nil {
			return nil, fmt.Errorf("overhead: ledger: %w", err)
		}
		led = ledger.New(st.store, ledger.Options{Logger: logger})
		agentCfg.DataDir = filepath.Join(dir, "worker")
		if st.agent, err = workers.OpenAgent(agentCfg); err != nil {
			return nil, fmt.Errorf("overhead: worker records: %w", err)
		}
	} else {
		st.agent = workers.NewAgent(agentCfg)
	}
	var workerLn net.Listener
	workerURL := ""
	if cfg.OutboundLink {
		if st.link, err = startOutboundLink(ctx, logger); err != nil {
			return nil, err
		}
		workerLn, workerURL = st.link.dialer, workers.LinkURL(st.link.session)
	} else {
		if workerLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("overhead: worker listen: %w", err)
		}
		workerURL = "http://" + workerLn.Addr().String()
	}
	st.workerSrv = &http.Server{Handler: workers.NewHandler(st.agent, logger), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = st.workerSrv.Serve(workerLn) }()

	sched, err := scheduler.New(scheduler.Config{}, scheduler.Deps{
		Clock:  clock.Real{},
		Logger: logger,
		Dial: func(url string) scheduler.Conn {
			if cfg.InProcessWorker {
				return InProcessConn{st.agent}
			}
			opts := workers.ClientOptions{Logger: logger}
			if st.link != nil {
				opts.Dial = st.link.Dial
			}
			if cfg.Receipts {
				opts.Records = workers.RecordPolicy{WorkerID: key.WorkerID(), Models: engine.Models()}
			}
			return workers.NewClient(url, opts)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("overhead: scheduler: %w", err)
	}
	st.Scheduler = sched
	sched.Upsert(&task.Registered{
		WorkerID: key.WorkerID(), PublicKey: key.PublicHex(),
		URL:    workerURL,
		Models: engine.Models(), MaxConcurrency: cfg.MaxConcurrency,
	})
	beatCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	st.stopBeats, st.beatsDone = stop, make(chan struct{})
	go st.heartbeats(beatCtx, sched, key.WorkerID(), logger)

	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, fmt.Errorf("overhead: api key: %w", err)
	}
	st.APIKey = "tg-bench-" + hex.EncodeToString(secret[:])
	deps := gateway.Deps{
		Dispatcher:  sched,
		ListWorkers: func() any { return sched.Workers() },
		Logger:      logger,
	}
	if led != nil {
		deps.Ledger = led
	}
	st.gw, err = gateway.New(gateway.Config{
		APIKeys: []gateway.APIKey{{ID: "bench", Key: st.APIKey}},
	}, deps)
	if err != nil {
		return nil, fmt.Errorf("overhead: gateway: %w", err)
	}
	gwLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("overhead: gateway listen: %w", err)
	}
	st.gwDone = make(chan error, 1)
	go func() { st.gwDone <- st.gw.Serve(gwLn) }()
	st.URL = "http://" + gwLn.Addr().String() + "/v1"
	return st, nil
}

// heartbeats reports the worker's load to the scheduler until ctx ends.
func (st *Stack) heartbeats(ctx context.Context, sched *scheduler.Scheduler, workerID string, logger *slog.Logger) {
	defer close(st.beatsDone)
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		hb := &task.Heartbeat{WorkerID: workerID, Time: time.Now(), InFlight: st.agent.InFlight()}
		if load, err := st.engine.Load(ctx); err == nil {
			hb.Load = load
		}
		if err := sched.Heartbeat(hb); err != nil {
			logger.Warn("heartbeat refused", "worker", workerID, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close shuts the gateway down gracefully, then the worker.
func (st *Stack) Close(ctx context.Context) error {
	var errs []error
	if st.gw != nil {
		errs = append(errs, st.gw.Shutdown(ctx))
		if st.gwDone != nil {
			<-st.gwDone
		}
	}
	if st.stopBeats != nil {
		st.stopBeats()
		<-st.beatsDone
	}
	if st.agent != nil {
		// The gateway has finished its requests; let the worker finish its
		// tasks, then close its listener and connections at once
		// (http.Server.Shutdown would wait 5s on a pre-dialled connection
		// that never carried a request).
		errs = append(errs, st.agent.Drain(ctx))
	}
	if st.workerSrv != nil {
		errs = append(errs, st.workerSrv.Close())
	}
	if st.link != nil {
		errs = append(errs, st.link.Close())
	}
	if st.agent != nil {
		errs = append(errs, st.agent.Close())
	}
	if st.engine != nil {
		errs = append(errs, st.engine.Close())
	}
	if st.store != nil {
		errs = append(errs, st.store.Close())
	}
	if st.tempDir != "" {
		errs = append(errs, os.RemoveAll(st.tempDir))
	}
	return errors.Join(errs...)
}
