// Package gateway is Tollgate's front door: a fasthttp server speaking the
// OpenAI API (chat completions, completions, embeddings, models; JSON and
// SSE), with bearer-key auth, request IDs, body limits, graceful shutdown,
// admin and worker-registration routes, the receipts API, and error rendering
// in OpenAI form in exactly one place (writeError). It translates only: the
// scheduler behind Dispatcher does the work, so everything here is testable
// with small fakes of the interfaces declared below.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/cors"
	"github.com/tollgate-ai/tollgate/internal/httpguard"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/ratelimit"
	"github.com/tollgate-ai/tollgate/internal/statuspage"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/valyala/fasthttp"
)

// Dispatcher runs one task on some worker and delivers its events in order
// (Index 0). Satisfied by *scheduler.Scheduler.
type Dispatcher interface {
	Dispatch(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error
	Models() []task.ModelVersion
}

// CapabilityChecker is a Dispatcher that can refuse, before admission, a
// task needing a capability (tools, response_format, logprobs, n, image or
// audio parts) that no registered worker's version of its model declares:
// a 400 unsupported_parameter naming the parameter. The scheduler is one.
type CapabilityChecker interface {
	CheckCapabilities(t *task.Task) error
}

// Ledger records completions as receipts and serves them. Optional: a nil
// Ledger turns receipts off. Satisfied by the receipts package's ledger.
type Ledger interface {
	// Record stores c under receiptID durably (fsync'd) before returning.
	Record(ctx context.Context, receiptID string, c *task.Completion) error
	// RecordVoid stores, as durably, that receiptID (already handed to a
	// client) names nothing billable, and why.
	RecordVoid(ctx context.Context, receiptID string, v *task.Void) error
	// Receipt returns any receipt's JSON, or an apierr 404.
	Receipt(ctx context.Context, id string) (json.RawMessage, error)
	// ReceiptOf returns the receipt only if its subject is subject, and
	// otherwise the same apierr 404 as for an unknown ID.
	ReceiptOf(ctx context.Context, subject, id string) (json.RawMessage, error)
	// Export lists every receipt after cursor in order, with the next cursor.
	Export(ctx context.Context, after string, limit int) (items []json.RawMessage, next string, err error)
	// ExportOf lists subject's receipts only, with cursors of its own.
	ExportOf(ctx context.Context, subject, after string, limit int) (items []json.RawMessage, next string, err error)
	// VerifyingKey returns a verifying key's bytes, or an apierr 404.
	VerifyingKey(ctx context.Context, id string) ([]byte, error)
}

// StatusSource is the scheduler's view the status page shows: the
// registered workers (without their session tokens) and the load now.
type StatusSource interface {
	StatusWorkers() []statuspage.Worker
	StatusLoad() statuspage.Load
}

// ReceiptCounter reports the receipts backlog for the status page.
type ReceiptCounter interface {
	ReceiptCounts(ctx context.Context) (statuspage.Receipts, error)
}

// KeyRole is what an API key may do.
type KeyRole string

const (
	// RoleClient keys make inference requests and read their own
	// receipts (those whose subject is the key's ID).
	RoleClient KeyRole = ""
	// RoleBilling keys read every receipt (GET /v1/receipts and
	// /v1/receipts/{id}) and nothing else: a billing system's credential.
	RoleBilling KeyRole = "billing"
)

// APIKey is one client or billing key.
type APIKey struct {
	ID       string        // subject recorded in receipts; never the key itself
	Key      string        // the bearer secret
	Role     KeyRole       // RoleClient (default) or RoleBilling
	Deadline time.Duration // default request deadline; 0: Config.DefaultDeadline
	Priority task.Priority // admission class
	// Audit lets the auditor re-execute the key's requests on a worker of
	// another provider: its prompts then reach a second (on a mismatch a
	// third) provider.
	Audit bool
	// RequestsPerMinute and TokensPerMinute limit the key (0: unlimited),
	// across every replica when Deps.RateLimiter shares its buckets. See
	// admit for how tokens, known only once a request completes, are
	// charged.
	RequestsPerMinute, TokensPerMinute int64

	requests, tokens ratelimit.Limiter // nil: unlimited
}

// Config is the gateway's own configuration (cmd/tollgate maps the config
// file onto it).
type Config struct {
	APIKeys   []APIKey
	AdminKeys []string
	// Pprof serves net/http/pprof's profiles under /debug/pprof to admin
	// keys only. Off by default: a heap or goroutine dump holds request
	// data.
	Pprof bool
	// BodyLimit is the largest request body in bytes (413 above). Default 4 MiB.
	BodyLimit int
	// Limits bounds request parameters (max_tokens and so on).
	Limits openai.Limits
	// DefaultDeadline applies to keys without their own. Default 10m.
	DefaultDeadline time.Duration
	// KeepAlive is the idle time after which a stream gets a `: keepalive`
	// comment. Default 15s.
	KeepAlive time.Duration
	// WarmUp is how long after start a request for a known model (see
	// Deps.KnownModels) that no worker serves yet answers 503
	// model_warming_up with Retry-After instead of 404: after a restart,
	// workers need a heartbeat or two to register again. Default 30s;
	// negative: off.
	WarmUp time.Duration
	// ReadTimeout bounds reading one request; IdleTimeout a kept-alive
	// connection between requests. Defaults 30s and 120s. There is no write
	// timeout: streams are long.
	ReadTimeout, IdleTimeout time.Duration
	// CORS lets pages on the listed origins call the API from a browser
	// (internal/cors). Zero: off, no CORS header is sent.
	CORS cors.Config
}

// DefaultRequestDeadline is Config.DefaultDeadline's default.
const DefaultRequestDeadline = 10 * time.Minute

func (c *Config) setDefaults() {
	if c.BodyLimit <= 0 {
		c.BodyLimit = 4 << 20
	}
	if c.DefaultDeadline <= 0 {
		c.DefaultDeadline = DefaultRequestDeadline
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
}

// Deps are the gateway's collaborators.
type Deps struct {
	Dispatcher Dispatcher // required
	// Registry and Registrar enable the worker-registration routes; both
	// nil turns them off (a gateway with only static workers).
	Registry  WorkerRegistry
	Registrar Registrar
	// ListWorkers feeds GET /v1/workers; its result is marshalled as is.
	ListWorkers func() any
	Ledger      Ledger // nil: receipts off
	// Responses keeps /v1/responses answers for GET, DELETE and
	// previous_response_id (nil: none are kept).
	Responses ResponseStore
	// Auditor re-executes a sample of finished requests (nil: no audits);
	// Disputes feeds GET /v1/admin/disputes, marshalled as is.
	Auditor Auditor
	// With err set (a shared log unreachable), list is what this replica
	// has, served with "partial": true.
	Disputes func(ctx context.Context) (list any, err error)
	// AuditStatus feeds the status page's audit card (nil: hidden).
	AuditStatus func() statuspage.Audit
	// Obs traces each request (continuing a client's W3C trace context),
	// records the HTTP and GenAI metrics and serves /metrics. nil: off.
	Obs *obs.Provider
	// Status and Receipts feed the status page at "/" (either may be nil:
	// its section is then empty).
	Status   StatusSource
	Receipts ReceiptCounter
	// RateLimiter makes the limiter for one per-key rate (its buckets
	// are named "req:<key id>" and "tok:<key id>"). Default:
	// ratelimit.NewLocal, this replica only; the --redis mode passes a
	// shared Redis bucket with a local fallback.
	RateLimiter func(ratelimit.Rate) (ratelimit.Limiter, error)
	// Readiness are extra checks for /readyz: a non-nil error (a shared
	// store unreachable, say) makes it 503 with the error as the reason,
	// while the gateway keeps serving what it can.
	Readiness []func() error
	// KnownModels names the models that exist even when no worker serves
	// them yet (configured and allowed models), for Config.WarmUp. nil:
	// no warm-up.
	KnownModels func() []string
	// Version is shown on the status page.
	Version string
	Logger  *slog.Logger
	Clock   clock.Clock
}

// Server is the gateway. Create it with New, run it with Serve, stop it with
// Shutdown.
type Server struct {
	cfg Config
	// links maps a worker ID to the outbound-link session it registered
	// on (see linkSession); absent for a worker the gateway dials.
	links    sync.Map
	deps     Deps
	log      *slog.Logger
	clock    clock.Clock
	keys     map[[32]byte]*APIKey
	admin    map[[32]byte]bool
	srv      *fasthttp.Server
	cors     *cors.Policy // nil: CORS off
	draining atomic.Bool

	mu        sync.Mutex
	listeners []net.Listener // every listener Serve was given, closed by Shutdown
	hijacked  sync.WaitGroup // streams to HTTP/1.0 clients, on connections fasthttp no longer tracks
}

// New validates cfg and builds a server.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Dispatcher == nil {
		return nil, errors.New("gateway: Deps.Dispatcher is required")
	}
	if (deps.Registry == nil) != (deps.Registrar == nil) {
		return nil, errors.New("gateway: Deps.Registry and Deps.Registrar go together")
	}
	cfg.setDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.RateLimiter == nil {
		deps.RateLimiter = func(r ratelimit.Rate) (ratelimit.Limiter, error) { return ratelimit.NewLocal(r) }
	}
	deps.Dispatcher = newWarmingDispatcher(deps.Dispatcher, deps.Clock, cfg.WarmUp, deps.KnownModels)
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, clock: deps.Clock,
		keys: map[[32]byte]*APIKey{}, admin: map[[32]byte]bool{}}
	var err error
	if s.cors, err = cors.New(cfg.CORS); err != nil {
		return nil, fmt.Errorf("gateway: cors: %w", err)
	}
	ids := map[string]bool{}
	for i := range cfg.APIKeys {
		k := &cfg.APIKeys[i]
		if k.Key == "" || k.ID == "" {
			return nil, fmt.Errorf("gateway: api key %d needs both id and key", i)
		}
		if k.Role != RoleClient && k.Role != RoleBilling {
			return nil, fmt.Errorf("gateway: api key %q has unknown role %q", k.ID, k.Role)
		}
		if ids[k.ID] {
			return nil, fmt.Errorf("gateway: duplicate api key id %q", k.ID)
		}
		ids[k.ID] = true
		if err := s.keyLimiters(k); err != nil {
			return nil, err
		}
		h, err := keyDigest(k.Key)
		if err != nil {
			return nil, fmt.Errorf("gateway: api key %q: %w", k.ID, err)
		}
		if _, dup := s.keys[h]; dup {
			return nil, fmt.Errorf("gateway: api key %q repeats another key's secret", k.ID)
		}
		s.keys[h] = k
	}
	for i, k := range cfg.AdminKeys {
		if k == "" {
			return nil, fmt.Errorf("gateway: admin key %d is empty", i)
		}
		h, err := keyDigest(k)
		if err != nil {
			return nil, fmt.Errorf("gateway: admin key %d: %w", i, err)
		}
		if s.keys[h] != nil {
			return nil, fmt.Errorf("gateway: admin key %d repeats an api key's secret", i)
		}
		s.admin[h] = true
	}
	registerSecrets(cfg)
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		ErrorHandler:                 s.handleTransportError,
		Name:                         "tollgate",
		MaxRequestBodySize:           cfg.BodyLimit,
		ReadTimeout:                  cfg.ReadTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		WriteTimeout:                 0, // streams are long
		CloseOnShutdown:              true,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		// fasthttp's header errors otherwise quote the raw header
		// block, credentials included, into the error (and the log).
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{s.log},
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		return ln.Close()
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	// Ambiguous framing (request smuggling) is refused before fasthttp
	// parses it; see internal/httpguard.
	return s.srv.Serve(httpguard.Listener(ln, httpguard.Limits{}))
}

// Shutdown stops accepting connections, closes idle ones, and waits for
// in-flight requests, streams included, to finish or for ctx to end.
// /readyz reports 503 from the moment it is called.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	s.mu.Unlock()
	err := s.srv.ShutdownWithContext(ctx)
	// fasthttp closes only the listeners its Serve loop has registered; a
	// Serve that started just before Shutdown may not have yet, and would
	// then accept forever.
	s.mu.Lock()
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.hijacked.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// handleTransportError renders errors fasthttp meets before the handler runs
// (body too large, malformed request, read timeout).
func (s *Server) handleTransportError(rc *fasthttp.RequestCtx, err error) {
	reqID := s.requestID(rc)
	var ae *apierr.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ae = apierr.TooLarge(s.cfg.BodyLimit)
	case guardRefusal(err) != nil:
		ae = guardRefusal(err)
	default:
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			ae = &apierr.Error{Status: fasthttp.StatusRequestTimeout, Type: apierr.TypeInvalidRequest, Code: "request_timeout", Message: "timed out reading the request", Cause: err}
		} else {
			ae = apierr.BadRequest("", "malformed_request", "the HTTP request could not be parsed")
			ae.Cause = err
		}
	}
	s.writeError(context.Background(), rc, reqID, ae)
	s.decorate(rc)
}
