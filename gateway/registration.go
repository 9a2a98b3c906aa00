package gateway

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/httpguard"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/valyala/fasthttp"
)

// WorkerRegistry is where registered workers and their heartbeats go.
// Satisfied by *scheduler.Scheduler.
type WorkerRegistry interface {
	Upsert(w *task.Registered)
	// Heartbeat fails for a worker the registry does not know, which tells
	// the worker to register again.
	Heartbeat(hb *task.Heartbeat) error
	Remove(workerID string)
}

// Registrar checks who may join: challenges, signatures, the model
// allow-list and session tokens. Satisfied by *workers.Registrar.
type Registrar interface {
	// Challenge needs the caller's provider token (its bearer token).
	Challenge(providerToken string, now time.Time) (string, error)
	Register(ctx context.Context, req *workers.RegisterRequest, now time.Time) (*task.Registered, error)
	// VerifySession fails with an apierr 401 (code unknown_worker or
	// invalid_session) for a token that does not open this worker's session.
	VerifySession(workerID, token string) error
	// Forget ends a worker's session.
	Forget(workerID string)
	AllowModel(mv task.ModelVersion) error
	// HeartbeatInterval is what registered workers are told.
	HeartbeatInterval() time.Duration
}

// workerLedger is an optional extension of Ledger (checked by type
// assertion): a ledger that must know each worker's URL (for countersigning)
// and admits each (worker, model version) pair it serves into the admission
// registry the proofs commit to. Registration fails if the ledger cannot
// record them, since that worker's receipts could never be proven.
type workerLedger interface {
	SetWorkerURL(ctx context.Context, workerID, url string) error
	// AdmitWorker admits the pairs (a signed registry root history entry
	// when any is new). It refuses, admitting nothing, versions an admin
	// revoked for the worker, with an error that has RevokedVersions.
	AdmitWorker(ctx context.Context, workerID string, versions ...task.ModelVersion) error
}

// revokedError is how AdmitWorker names the versions it refused.
type revokedError interface {
	error
	RevokedVersions() []task.ModelVersion
}

// registryLedger is an optional extension of Ledger that publishes and
// changes the admission registry (GET /v1/zk/registry, POST
// /v1/admin/revoke and /v1/admin/reinstate).
type registryLedger interface {
	// RootHistory is the operator-signed registry root history.
	RootHistory(ctx context.Context) (*receipts.RootHistory, error)
	// RevokeWorker removes the worker's pairs for model (empty: all) and
	// digest (empty: all), puts a root without them in force, and denies
	// them until reinstated. It returns the versions removed.
	RevokeWorker(ctx context.Context, workerID, model, digest string) ([]task.ModelVersion, error)
	// RevokeKey revokes the worker's key from a time (a compromised key):
	// its pairs go, and the signed history refuses its batches dated from
	// then on under any root. The key cannot be reinstated.
	RevokeKey(ctx context.Context, workerID string, from time.Time) ([]task.ModelVersion, error)
	// ReinstateWorker lifts the denials model and digest cover; it returns
	// those still in force (an empty name or digest: all).
	ReinstateWorker(ctx context.Context, workerID, model, digest string) ([]task.ModelVersion, error)
}

// admitWorker admits a registering worker's model versions. Versions an admin
// revoked for it are dropped from the registration (it serves the rest);
// a worker left with none is refused (403 worker_revoked).
func (s *Server) admitWorker(ctx context.Context, wl workerLedger, reg *task.Registered) error {
	for attempt := 0; ; attempt++ {
		err := wl.AdmitWorker(ctx, reg.WorkerID, reg.Models...)
		var rev revokedError
		if err == nil || !errors.As(err, &rev) {
			return err
		}
		reg.Models = slices.DeleteFunc(reg.Models, func(m task.ModelVersion) bool {
			return slices.ContainsFunc(rev.RevokedVersions(), func(r task.ModelVersion) bool {
				return r.Name == m.Name && strings.EqualFold(r.Digest, m.Digest)
			})
		})
		s.log.Warn("registration without revoked models", "worker", reg.WorkerID, "revoked", len(rev.RevokedVersions()), "left", len(reg.Models))
		if len(reg.Models) == 0 || attempt > 0 {
			return apierr.Forbidden("worker_revoked", "This worker has been revoked for the models it serves; an operator must reinstate it.")
		}
	}
}

// countersignLedger is a workerLedger that also hands each worker's
// countersign credential to the provers (checked by type assertion).
type countersignLedger interface {
	SetCountersignCredential(ctx context.Context, workerID, credential string) error
}

// workerRoute serves POST /v1/workers/{challenge,register,heartbeat,deregister}.
func (s *Server) workerRoute(rc *fasthttp.RequestCtx, reqID, op string) error {
	if s.deps.Registrar == nil {
		return apierr.NotFound("", "registration_disabled", "Worker registration is not enabled on this gateway.")
	}
	now := s.clock.Now()
	switch op {
	case "challenge":
		tok, _ := bearer(rc)
		c, err := s.deps.Registrar.Challenge(tok, now)
		if err != nil {
			return err
		}
		return writeJSON(rc, workers.ChallengeResponse{Challenge: c})
	case "register":
		var req workers.RegisterRequest
		if len(rc.PostBody()) > task.MaxRegisterBytes {
			return apierr.TooLarge(task.MaxRegisterBytes)
		}
		if err := readJSON(rc, &req); err != nil {
			return err
		}
		session := linkSession(rc)
		if _, isLink := workers.LinkSession(req.URL); isLink && session == "" {
			return apierr.BadRequest("url", workers.CodeInvalidRegistration,
				"A %s:// url registers only over the worker link (tollgate worker --gateway-link).", workers.LinkScheme)
		}
		ctx, cancel := opContext()
		defer cancel()
		reg, err := s.deps.Registrar.Register(ctx, &req, now)
		if err != nil {
			return err
		}
		if session != "" {
			// The worker signed the URL it sent; the gateway reaches it
			// over the session it came on, whatever that URL said.
			reg.URL = workers.LinkURL(session)
			s.links.Store(reg.WorkerID, session)
		} else {
			s.links.Delete(reg.WorkerID)
		}
		countersign := "" // only a ledger's provers countersign
		if wl, ok := s.deps.Ledger.(workerLedger); ok {
			if err := s.admitWorker(ctx, wl, reg); err != nil {
				s.deps.Registrar.Forget(reg.WorkerID)
				if ae := apierr.From(err); ae.Status == fasthttp.StatusForbidden {
					return err
				}
				return apierr.Internal(err)
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
		if session != "" {
			markLinkRegistered(rc, reg.WorkerID) // the session keeps its slot, past its register deadline
		}
		s.log.Debug("worker registered", "request_id", reqID, "worker", reg.WorkerID, "url", reg.URL, "models", len(reg.Models))
		return writeJSON(rc, workers.RegisterResponse{
			WorkerID:            reg.WorkerID,
			SessionToken:        reg.SessionToken,
			HeartbeatIntervalMS: s.deps.Registrar.HeartbeatInterval().Milliseconds(),
			CountersignToken:    countersign,
		})
	case "heartbeat":
		var hb task.Heartbeat
		if err := readJSON(rc, &hb); err != nil {
			return err
		}
		if err := task.ValidateHeartbeat(&hb); err != nil {
			return err
		}
		if err := s.workerSession(rc, hb.WorkerID); err != nil {
			return err
		}
		// A link worker's heartbeat counts only on the session it
		// registered on: after the link dropped and the worker dialled in
		// again its batches must go to the new session, so it registers
		// anew; and one sent off the link (the API port) must not keep a
		// worker whose link is down in rotation.
		registered, onLink := s.links.Load(hb.WorkerID)
		if session := linkSession(rc); (onLink || session != "") && registered != session {
			return apierr.Unauthorized(workers.CodeUnknownWorker, "This worker registered on another link; register again.")
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
		s.links.Delete(body.WorkerID)
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
	var mv task.ModelVersion
	if err := readJSON(rc, &mv); err != nil {
		return err
	}
	if err := s.deps.Registrar.AllowModel(mv); err != nil {
		return err
	}
	s.log.Info("model allowed", "model", mv.Name, "digest", mv.Digest)
	return writeJSON(rc, mv)
}

// getRegistry serves GET /v1/zk/registry: the operator-signed registry
// root history with a head signed now. Public, like the verifying keys:
// verifiers pin the operator key and check the signatures themselves.
func (s *Server) getRegistry(rc *fasthttp.RequestCtx) error {
	rl, ok := s.deps.Ledger.(registryLedger)
	if !ok {
		return errReceiptsOff
	}
	ctx, cancel := opContext()
	defer cancel()
	h, err := rl.RootHistory(ctx)
	if err != nil {
		return err
	}
	return writeJSON(rc, h)
}

// revokeRequest is the body of POST /v1/admin/revoke and /v1/admin/reinstate.
type revokeRequest struct {
	WorkerID string `json:"worker_id"`
	Model    string `json:"model,omitempty"`  // empty: every model
	Digest   string `json:"digest,omitempty"` // empty: every digest
	// From (revoke only) revokes the worker's key itself from that time,
	// which may be in the past: for a compromised key, whose holder could
	// otherwise prove batches backdated to before the revocation.
	From *time.Time `json:"from,omitempty"`
}

func (s *Server) readRevoke(rc *fasthttp.RequestCtx) (registryLedger, *revokeRequest, error) {
	if err := s.authenticateAdmin(rc); err != nil {
		return nil, nil, err
	}
	rl, ok := s.deps.Ledger.(registryLedger)
	if !ok {
		return nil, nil, errReceiptsOff
	}
	var req revokeRequest
	if err := readJSON(rc, &req); err != nil {
		return nil, nil, err
	}
	if receipts.CheckElement(req.WorkerID) != nil {
		return nil, nil, apierr.BadRequest("worker_id", "invalid_value", "Invalid 'worker_id': want 0x and 64 lowercase hex digits.")
	}
	if req.Digest != "" && receipts.CheckDigest(req.Digest) != nil {
		return nil, nil, apierr.BadRequest("digest", "invalid_value", "Invalid 'digest': want 64 lowercase hex digits.")
	}
	if req.Digest != "" && req.Model == "" {
		return nil, nil, apierr.BadRequest("model", "missing_required_parameter", "A 'digest' needs its 'model'.")
	}
	if req.From != nil && req.Model != "" {
		return nil, nil, apierr.BadRequest("from", "invalid_value", "'from' revokes the worker's key, for every model: leave 'model' out.")
	}
	if req.From != nil && req.From.After(s.clock.Now()) {
		return nil, nil, apierr.BadRequest("from", "invalid_value", "Invalid 'from': it is in the future.")
	}
	return rl, &req, nil
}

// revokeWorker serves POST /v1/admin/revoke: the worker's pairs for the
// model (all when omitted) leave the admission registry (a new signed
// root), the worker leaves rotation and its session ends, and it cannot
// admit those pairs again by registering until an admin reinstates it. If
// it registers again with other models, it serves those. With "from" the
// key itself is revoked from that time (see registryLedger.RevokeKey).
func (s *Server) revokeWorker(rc *fasthttp.RequestCtx) error {
	rl, req, err := s.readRevoke(rc)
	if err != nil {
		return err
	}
	ctx, cancel := opContext()
	defer cancel()
	var removed []task.ModelVersion
	if req.From != nil {
		removed, err = rl.RevokeKey(ctx, req.WorkerID, *req.From)
	} else {
		removed, err = rl.RevokeWorker(ctx, req.WorkerID, req.Model, req.Digest)
	}
	if err != nil {
		return apierr.Internal(err)
	}
	if s.deps.Registry != nil {
		s.deps.Registry.Remove(req.WorkerID)
	}
	if s.deps.Registrar != nil {
		s.deps.Registrar.Forget(req.WorkerID)
	}
	if removed == nil {
		removed = []task.ModelVersion{}
	}
	out := map[string]any{"worker_id": req.WorkerID, "model": req.Model, "digest": req.Digest, "removed": removed}
	if req.From != nil {
		out["key_revoked_from"] = req.From.UTC()
		s.log.Warn("worker key revoked", "worker", req.WorkerID, "from", req.From.UTC(), "pairs_removed", len(removed))
	} else {
		s.log.Info("worker revoked", "worker", req.WorkerID, "model", req.Model, "digest", req.Digest, "pairs_removed", len(removed))
	}
	return writeJSON(rc, out)
}

// reinstateWorker serves POST /v1/admin/reinstate: it lifts the denials the
// model (all when omitted) covers; the worker's next registration admits
// it again. The answer lists the denials still in force.
func (s *Server) reinstateWorker(rc *fasthttp.RequestCtx) error {
	rl, req, err := s.readRevoke(rc)
	if err != nil {
		return err
	}
	ctx, cancel := opContext()
	defer cancel()
	left, err := rl.ReinstateWorker(ctx, req.WorkerID, req.Model, req.Digest)
	if err != nil {
		return apierr.Internal(err)
	}
	s.log.Info("worker reinstated", "worker", req.WorkerID, "model", req.Model, "digest", req.Digest, "still_revoked", len(left))
	if left == nil {
		left = []task.ModelVersion{}
	}
	return writeJSON(rc, map[string]any{"worker_id": req.WorkerID, "still_revoked": left})
}

// markLinkRegistered tells the worker link (internal/workerlink) that
// workerID registered on the session the request came on.
func markLinkRegistered(rc *fasthttp.RequestCtx, workerID string) {
	if l, ok := httpguard.Unwrap(rc.Conn()).(interface{ MarkRegistered(string) }); ok {
		l.MarkRegistered(workerID)
	}
}

// linkSession is the outbound worker-link session (internal/workerlink) a
// request came on, or "" for a plain connection.
func linkSession(rc *fasthttp.RequestCtx) string {
	if l, ok := httpguard.Unwrap(rc.Conn()).(interface{ LinkSession() string }); ok {
		return l.LinkSession()
	}
	return ""
}
