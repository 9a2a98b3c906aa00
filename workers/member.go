package workers

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// GPUSource is what the worker needs of GPU telemetry
// (telemetry.Collector satisfies it).
type GPUSource interface {
	GPUs(ctx context.Context) []task.GPU
}

// MemberConfig configures a worker's membership in a gateway.
type MemberConfig struct {
	// GatewayURL is the gateway's base URL, e.g. "http://gw:8080".
	GatewayURL    string
	ProviderToken string
	Key           *keys.Key
	// AdvertiseURL is where the gateway reaches this worker's Handler.
	AdvertiseURL string
	Agent        *Agent
	// GPUs reports telemetry; nil means no GPUs.
	GPUs       GPUSource
	HTTPClient *http.Client
	Logger     *slog.Logger
	Clock      clock.Clock
	// DrainTimeout bounds how long in-flight work may take on shutdown
	// (default 60 s).
	DrainTimeout time.Duration
}

// heartbeatTimeout bounds one heartbeat call, so a hung gateway does not
// stall the ones after it.
const heartbeatTimeout = 3 * time.Second

// Registerer is a worker's client for the gateway's registration routes.
type Registerer struct {
	cfg     MemberConfig
	http    *http.Client
	base    string
	mu      sync.Mutex
	session RegisterResponse
	// registering is open while a Register call is in flight (see
	// LinkToken) and closed when it ends.
	registering chan struct{}
}

// linkTokenWait bounds how long LinkToken waits for a registration in
// flight.
const linkTokenWait = 5 * time.Second

// Session is the current registration (zero before the first one).
func (r *Registerer) Session() RegisterResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.session
}

// SessionToken is the current session token.
func (r *Registerer) SessionToken() string { return r.Session().SessionToken }

// LinkToken is the session token for the worker's link handler
// (WithLinkAuth(r.LinkToken)): while a registration is in flight it first
// waits, up to linkTokenWait, for the gateway's answer. The gateway routes
// batches to a worker as soon as it accepts the registration, which can be
// before this worker has read the new token from the answer; refusing such
// a batch would fail the request and get the worker ejected.
func (r *Registerer) LinkToken() string { return r.settled().SessionToken }

// CountersignToken is the countersign credential of the current
// registration, for the countersign route
// (WithCountersignCredential(r.CountersignToken)); like LinkToken it
// first waits for a registration in flight, since the gateway hands the
// new credential to its provers before this worker reads it.
func (r *Registerer) CountersignToken() string { return r.settled().CountersignToken }

// settled is the session once no registration is in flight (waiting up to
// linkTokenWait for one).
func (r *Registerer) settled() RegisterResponse {
	r.mu.Lock()
	pending := r.registering
	r.mu.Unlock()
	if pending != nil {
		expired := make(chan struct{})
		t := r.cfg.Clock.AfterFunc(linkTokenWait, func() { close(expired) })
		select {
		case <-pending:
		case <-expired:
		}
		t.Stop()
	}
	return r.Session()
}

// NewRegisterer checks cfg and builds a Registerer.
func NewRegisterer(cfg MemberConfig) (*Registerer, error) {
	switch {
	case cfg.Key == nil:
		return nil, errors.New("member: a worker key is required")
	case cfg.Agent == nil:
		return nil, errors.New("member: an agent is required")
	case cfg.ProviderToken == "":
		return nil, errors.New("member: a provider token is required")
	}
	if err := ValidateWorkerURL(cfg.AdvertiseURL); err != nil {
		return nil, fmt.Errorf("member: advertise url: %w", err)
	}
	if !strings.HasPrefix(cfg.GatewayURL, "http://") && !strings.HasPrefix(cfg.GatewayURL, "https://") {
		return nil, fmt.Errorf("member: gateway url %q is not http(s)", cfg.GatewayURL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 60 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: NewTransport(), Timeout: 10 * time.Second}
	}
	cfg.Logger = cfg.Logger.With("worker", cfg.Key.WorkerID())
	return &Registerer{cfg: cfg, http: hc, base: strings.TrimRight(cfg.GatewayURL, "/")}, nil
}

// Register fetches a challenge, signs it and registers.
func (r *Registerer) Register(ctx context.Context) (*RegisterResponse, error) {
	pending := make(chan struct{})
	r.mu.Lock()
	r.registering = pending
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.registering == pending {
			r.registering = nil
		}
		r.mu.Unlock()
		close(pending)
	}()
	var ch ChallengeResponse
	// Challenges are only for holders of a provider token.
	if err := r.post(ctx, PathChallenge, r.cfg.ProviderToken, struct{}{}, &ch); err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	models := r.cfg.Agent.Models()
	req := RegisterRequest{
		ProviderToken:  r.cfg.ProviderToken,
		PublicKey:      r.cfg.Key.PublicHex(),
		Challenge:      ch.Challenge,
		URL:            r.cfg.AdvertiseURL,
		Models:         models,
		GPUs:           r.gpus(ctx),
		MaxConcurrency: r.cfg.Agent.MaxConcurrency(),
	}
	sig, err := r.cfg.Key.SignBytes(RegistrationMessage(req.Challenge, req.PublicKey, req.URL, req.Models))
	if err != nil {
		return nil, fmt.Errorf("sign challenge: %w", err)
	}
	req.Signature = hex.EncodeToString(sig)
	var resp RegisterResponse
	if err := r.post(ctx, PathRegister, "", req, &resp); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	if resp.SessionToken == "" || resp.WorkerID != r.cfg.Key.WorkerID() {
		return nil, fmt.Errorf("register: gateway answered worker %q (want %q) or no session", resp.WorkerID, r.cfg.Key.WorkerID())
	}
	r.mu.Lock()
	old := r.session.SessionToken
	r.session = resp
	r.mu.Unlock()
	// The session token authenticates the gateway's batches to this
	// worker: keep it out of the worker's log.
	obs.ForgetSecret(old)
	obs.AddSecrets(resp.SessionToken)
	return &resp, nil
}

// Heartbeat sends one heartbeat with telemetry, engine load and in-flight
// count. An error that IsUnknownWorker means register again.
func (r *Registerer) Heartbeat(ctx context.Context, draining bool) error {
	sess := r.Session()
	ctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
	defer cancel()
	hb := task.Heartbeat{
		WorkerID: sess.WorkerID,
		Time:     r.cfg.Clock.Now().UTC(),
		GPUs:     r.gpus(ctx),
		InFlight: r.cfg.Agent.InFlight(),
		Draining: draining,
	}
	if lr, ok := r.cfg.Agent.Engine().(task.LoadReporter); ok {
		load, err := lr.Load(ctx)
		if err != nil {
			r.cfg.Logger.Debug("engine load unavailable", "err", err)
		} else {
			hb.Load = load
		}
	}
	return r.post(ctx, PathHeartbeat, sess.SessionToken, hb, nil)
}

// Deregister tells the gateway this worker is leaving.
func (r *Registerer) Deregister(ctx context.Context) error {
	sess := r.Session()
	return r.post(ctx, PathDeregister, sess.SessionToken, DeregisterRequest{WorkerID: sess.WorkerID}, nil)
}

// Interval is the heartbeat interval: the gateway's, capped at 1 s.
func (r *Registerer) Interval() time.Duration {
	d := time.Duration(r.Session().HeartbeatIntervalMS) * time.Millisecond
	if d <= 0 || d > time.Second {
		d = time.Second
	}
	return d
}

func (r *Registerer) gpus(ctx context.Context) []task.GPU {
	if r.cfg.GPUs == nil {
		return []task.GPU{}
	}
	g := r.cfg.GPUs.GPUs(ctx)
	if g == nil {
		g = []task.GPU{}
	}
	return g
}

// IsUnknownWorker reports whether the gateway answered that it does not know
// this worker (it restarted or timed us out), so the worker must register
// again.
func IsUnknownWorker(err error) bool {
	var e *apierr.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Status == http.StatusNotFound || e.Code == CodeUnknownWorker || e.Code == CodeInvalidSession
}

func (r *Registerer) post(ctx context.Context, path, bearer string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
			return &apierr.Error{Status: resp.StatusCode, Type: apierr.TypeServer, Message: fmt.Sprintf("gateway answered %s", resp.Status)}
		}
		e := eb.Error
		e.Status = resp.StatusCode
		return e.APIError()
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("malformed gateway answer: %w", err)
	}
	return nil
}

// RunMember keeps the worker registered with the gateway until ctx is done:
// it registers (retrying with backoff), heartbeats at the gateway's interval
// (at most 1 s), registers again when the gateway has forgotten it, and when
// ctx is cancelled (SIGTERM) drains: it heartbeats draining=true, stops the
// agent taking new batches (they get 503), waits for in-flight tasks (up to
// DrainTimeout) while still heartbeating, then deregisters.
func RunMember(ctx context.Context, cfg MemberConfig) error {
	r, err := NewRegisterer(cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// Run is RunMember on an existing Registerer.
func (r *Registerer) Run(ctx context.Context) error {
	log := r.cfg.Logger
	if err := r.registerUntil(ctx); err != nil {
		return r.drain(ctx, false)
	}
	for {
		if err := r.tick(ctx, r.Interval()); err != nil {
			return r.drain(ctx, true)
		}
		err := r.Heartbeat(ctx, false)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return r.drain(ctx, true)
		case IsUnknownWorker(err):
			log.Info("gateway does not know this worker; registering again", "err", err)
			if err := r.registerUntil(ctx); err != nil {
				return r.drain(ctx, false)
			}
		default:
			log.Warn("heartbeat failed", "err", err)
		}
	}
}

// registerUntil registers, retrying with capped exponential backoff, until it
// succeeds or ctx is done.
func (r *Registerer) registerUntil(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		resp, err := r.Register(ctx)
		if err == nil {
			r.cfg.Logger.Info("registered with gateway", "gateway", r.base, "heartbeat_ms", resp.HeartbeatIntervalMS)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.cfg.Logger.Warn("registration failed", "gateway", r.base, "err", err, "retry_in", backoff)
		if err := r.tick(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// tick waits d on the injected clock, or returns ctx's error.
func (r *Registerer) tick(ctx context.Context, d time.Duration) error {
	ch := make(chan struct{})
	t := r.cfg.Clock.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

// drain runs the shutdown sequence on a fresh context bounded by DrainTimeout.
func (r *Registerer) drain(parent context.Context, registered bool) error {
	log := r.cfg.Logger
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), r.cfg.DrainTimeout)
	defer cancel()
	log.Info("draining", "in_flight", r.cfg.Agent.InFlight())
	drained := make(chan error, 1)
	go func() { drained <- r.cfg.Agent.Drain(ctx) }()
	if !registered {
		return <-drained
	}
	if err := r.Heartbeat(ctx, true); err != nil {
		log.Warn("draining heartbeat failed", "err", err)
	}
	var derr error
	for waiting := true; waiting; {
		hb := make(chan struct{})
		t := r.cfg.Clock.AfterFunc(r.Interval(), func() { close(hb) })
		select {
		case derr = <-drained:
			t.Stop()
			waiting = false
		case <-hb:
			if err := r.Heartbeat(ctx, true); err != nil {
				log.Warn("draining heartbeat failed", "err", err)
			}
		}
	}
	if derr != nil {
		log.Warn("drain timed out; deregistering with work in flight", "err", derr)
	}
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(parent), 5*time.Second)
	defer dcancel()
	if err := r.Deregister(dctx); err != nil {
		log.Warn("deregister failed", "err", err)
		return errors.Join(derr, fmt.Errorf("deregister: %w", err))
	}
	log.Info("deregistered")
	return derr
}
