package gateway

import (
	"context"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/valyala/fasthttp"
)

// WorkerRegistry is where registered workers and their heartbeats go.
// Satisfied by *scheduler.Scheduler.
type WorkerRegistry interface {
	Upsert(w *workers.Registered)
	// Heartbeat fails for a worker the registry does not know, which tells
	// the worker to register again.
	Heartbeat(hb *workers.Heartbeat) error
	Remove(workerID string)
}

// Registrar checks who may join: challenges, signatures, the model
// allow-list and session tokens. Satisfied by *workers.Registrar.
type Registrar interface {
	Challenge(now time.Time) (string, error)
	Register(ctx context.Context, req *workers.RegisterRequest, now time.Time) (*workers.Registered, error)
	// VerifySession fails with an apierr 401 (code unknown_worker or
	// invalid_session) for a token that does not open this worker's session.
	VerifySession(workerID, token string) error
	// Forget ends a worker's session.
	Forget(workerID string)
	AllowModel(mv workers.ModelVersion) error
	// HeartbeatInterval is what registered workers are told.
	HeartbeatInterval() time.Duration
}

// workerLedger is an optional extension of Ledger (checked by type
// assertion): a ledger that must know each worker's URL (for countersigning)
// and every model version a worker serves (the model registry the proofs
// commit to). Registration fails if the ledger cannot record them, since
// that worker's receipts could never be proven.
type workerLedger interface {
	SetWorkerURL(ctx context.Context, workerID, url string) error
	RegisterModels(ctx context.Context, versions ...workers.ModelVersion) error
}

// countersignLedger is a workerLedger that also hands each worker's
// countersign credential to the provers (checked by type assertion).
type countersignLedger interface {
	SetCountersignCredential(ctx context.Context, workerID, credential string) error
}

// admissionLedger is a workerLedger that also keeps the v2 admission
// registry of (worker, model version) pairs (checked by type assertion).
type admissionLedger interface {
	AdmitWorker(ctx context.Context, workerID string, versions ...workers.ModelVersion) error
}

// workerRoute serves POST /v1/workers/{challenge,register,heartbeat,deregister}.
func (s *Server) workerRoute(rc *fasthttp.RequestCtx, reqID, op string) error {
	if s.deps.Registrar == nil {
		return apierr.NotFound("", "registration_disabled", "Worker registration is not enabled on this gateway.")
	}
	now := s.clock.Now()
	switch op {
	case "challenge":
		c, err := s.deps.Registrar.Challenge(now)
		if err != nil {
			return err
		}
		return writeJSON(rc, workers.ChallengeResponse{Challenge: c})
	case "register":
		var req workers.RegisterRequest
		if len(rc.PostBody()) > workers.MaxRegisterBytes {
			return apierr.TooLarge(workers.MaxRegisterBytes)
		}
		if err := readJSON(rc, &req); err != nil {
			return err
		}
		ctx, cancel := opContext()
		defer cancel()
		reg, err := s.deps.Registrar.Register(ctx, &req, now)
		if err != nil {
			return err
		}
		countersign := "" // only a ledger's provers countersign
		if wl, ok := s.deps.Ledger.(workerLedger); ok {
			if err := wl.RegisterModels(ctx, reg.Models...); err != nil {
				return apierr.Internal(err)
			}
			if al, ok := wl.(admissionLedger); ok {
				if err := al.AdmitWorker(ctx, reg.WorkerID, reg.Models...); err != nil {
					return apierr.Internal(err)
				}
			}
			if err := wl.SetWorkerURL(ctx, reg.WorkerID, reg.URL); err != nil {
				return apierr.Internal(err)
			}
			if cl, ok := wl.(countersignLedger); ok {
				if err := cl.SetCountersignCredential(ctx, reg.WorkerID, reg.CountersignToken); err != nil {
					return apierr.Internal(err)
				}
				countersign = reg.CountersignToken
			}
		}
		s.deps.Registry.Upsert(reg)
		s.log.Debug("worker registered", "request_id", reqID, "worker", reg.WorkerID, "url", reg.URL, "models", len(reg.Models))
		return writeJSON(rc, workers.RegisterResponse{
			WorkerID:            reg.WorkerID,
			SessionToken:        reg.SessionToken,
			HeartbeatIntervalMS: s.deps.Registrar.HeartbeatInterval().Milliseconds(),
			CountersignToken:    countersign,
		})
	case "heartbeat":
		var hb workers.Heartbeat
		if err := readJSON(rc, &hb); err != nil {
			return err
		}
		if err := workers.ValidateHeartbeat(&hb); err != nil {
			return err
		}
		if err := s.workerSession(rc, hb.WorkerID); err != nil {
			return err
		}
		if err := s.deps.Registry.Heartbeat(&hb); err != nil {
			// One answer for "register again", whichever side forgot.
			e := apierr.Unauthorized(workers.CodeUnknownWorker, "The gateway does not know this worker; register again.")
			e.Cause = err
			return e
		}
		return writeJSON(rc, map[string]bool{"ok": true})
	case "deregister":
		var body workers.DeregisterRequest
		if err := readJSON(rc, &body); err != nil {
			return err
		}
		if err := s.workerSession(rc, body.WorkerID); err != nil {
			return err
		}
		s.deps.Registry.Remove(body.WorkerID)
		s.deps.Registrar.Forget(body.WorkerID)
		s.log.Info("worker deregistered", "request_id", reqID, "worker", body.WorkerID)
		return writeJSON(rc, map[string]bool{"ok": true})
	}
	return apierr.NotFound("", "unknown_url", "Unknown request URL: POST /v1/workers/%s.", op)
}

// workerSession checks the worker's bearer session token.
func (s *Server) workerSession(rc *fasthttp.RequestCtx, workerID string) error {
	if workerID == "" {
		return apierr.BadRequest("worker_id", "missing_required_parameter", "Missing required parameter: 'worker_id'.")
	}
	tok, ok := bearer(rc)
	if !ok {
		return apierr.Unauthorized("missing_session_token", "A worker session token is required.")
	}
	if err := s.deps.Registrar.VerifySession(workerID, tok); err != nil {
		if ae := apierr.From(err); ae.Status == 401 {
			return err
		}
		return apierr.Unauthorized(workers.CodeInvalidSession, "The worker session token is not valid; register again.")
	}
	return nil
}

// allowModel serves POST /v1/admin/models: it adds a model version to the
// registration allow-list.
func (s *Server) allowModel(rc *fasthttp.RequestCtx) error {
	if err := s.authenticateAdmin(rc); err != nil {
		return err
	}
	if s.deps.Registrar == nil {
		return apierr.NotFound("", "registration_disabled", "Worker registration is not enabled on this gateway.")
	}
	var mv workers.ModelVersion
	if err := readJSON(rc, &mv); err != nil {
		return err
	}
	if err := s.deps.Registrar.AllowModel(mv); err != nil {
		return err
	}
	s.log.Info("model allowed", "model", mv.Name, "digest", mv.Digest)
	return writeJSON(rc, mv)
}
