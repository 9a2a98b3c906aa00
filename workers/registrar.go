package workers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// Registration routes on the gateway.
const (
	PathChallenge  = "/v1/workers/challenge"
	PathRegister   = "/v1/workers/register"
	PathHeartbeat  = "/v1/workers/heartbeat"
	PathDeregister = "/v1/workers/deregister"
)

// Registration error codes.
const (
	CodeInvalidProviderToken = "invalid_provider_token"
	CodeInvalidSignature     = "invalid_signature"
	CodeChallengeUnknown     = "challenge_unknown"
	CodeChallengeReplayed    = "challenge_replayed"
	CodeModelNotRegistered   = "model_not_registered"
	CodeInvalidRegistration  = "invalid_registration"
	// CodeUnknownWorker answers a heartbeat from a worker the gateway does
	// not know (it restarted, or timed the worker out): register again.
	CodeUnknownWorker  = "unknown_worker"
	CodeInvalidSession = "invalid_session"
)

// ChallengeResponse is the body of POST /v1/workers/challenge.
type ChallengeResponse struct {
	Challenge string `json:"challenge"`
}

// RegisterRequest is the body of POST /v1/workers/register. Signature is
// keys.SignBytes over RegistrationMessage(Challenge, PublicKey, URL, Models),
// hex encoded.
type RegisterRequest struct {
	ProviderToken  string              `json:"provider_token"`
	PublicKey      string              `json:"public_key"` // keys.PublicKeyHex
	Challenge      string              `json:"challenge"`
	Signature      string              `json:"signature"`
	URL            string              `json:"url"` // where the gateway sends batches
	Models         []task.ModelVersion `json:"models"`
	GPUs           []task.GPU          `json:"gpus"`
	MaxConcurrency int                 `json:"max_concurrency"`
}

// RegisterResponse is the body answering a successful registration.
type RegisterResponse struct {
	WorkerID            string `json:"worker_id"`
	SessionToken        string `json:"session_token"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	// CountersignToken is the credential the worker's countersign route
	// must require (WithCountersignCredential); empty from a gateway that
	// keeps no receipts.
	CountersignToken string `json:"countersign_token,omitempty"`
}

// DeregisterRequest is the body of POST /v1/workers/deregister.
type DeregisterRequest struct {
	WorkerID string `json:"worker_id"`
}

// RegistrationMessage is what a worker signs to register: a domain-separated
// text binding the challenge, its public key, its URL and its model list:
//
//	tollgate/worker-registration/v1\n
//	challenge=<hex>\n
//	public_key=<hex>\n
//	url=<url>\n
//	model=<name> <digest>[ capabilities=<c1>,<c2>,...]\n   (one line per model, in request order)
//
// The capabilities suffix is written only for a model that declares some
// (in its declared order), so a registration without them signs the same
// bytes as before capabilities existed. Names and digests hold no spaces
// (ValidateModelVersion) and capability names are from a fixed set, so
// the line cannot be forged by shifting text between its fields.
func RegistrationMessage(challenge, publicKey, url string, models []task.ModelVersion) []byte {
	var sb strings.Builder
	sb.WriteString("tollgate/worker-registration/v1\n")
	fmt.Fprintf(&sb, "challenge=%s\npublic_key=%s\nurl=%s\n", challenge, publicKey, url)
	for _, m := range models {
		fmt.Fprintf(&sb, "model=%s %s", m.Name, m.Digest)
		if len(m.Capabilities) > 0 {
			fmt.Fprintf(&sb, " capabilities=%s", task.CapabilityList(m.Capabilities))
		}
		sb.WriteByte('\n')
	}
	return []byte(sb.String())
}

// RegistrarConfig configures the gateway's side of registration.
type RegistrarConfig struct {
	// ProviderTokens are the operator-issued tokens a worker must present.
	ProviderTokens []string
	// OpenRegistration accepts any well-formed model version; otherwise only
	// versions in the allow-list (Models, AllowModel) are accepted.
	OpenRegistration bool
	Models           []task.ModelVersion
	// ChallengeTTL is how long a challenge may be answered (default 30 s).
	ChallengeTTL time.Duration
	// MaxChallenges bounds outstanding challenges per provider token
	// (default 10000).
	MaxChallenges int
	// HeartbeatInterval is what workers are told (default 1 s, at most 1 s).
	HeartbeatInterval time.Duration
	Logger            *slog.Logger
}

// Registrar is the gateway's registration logic, without HTTP: challenges,
// proof-of-key, provider tokens, the model allow-list and heartbeat sessions.
type Registrar struct {
	tokens   [][32]byte
	open     bool
	ttl      time.Duration
	maxChal  int
	interval time.Duration
	logger   *slog.Logger

	mu         sync.Mutex
	allowed    map[string]task.ModelVersion // name + " " + digest
	challenges map[string]challenge
	expiry     []queued // challenges in issue order, from head
	head       int
	// outstanding counts unexpired challenges per provider token.
	outstanding []int
	sessions    map[string][32]byte // worker ID -> SHA-256 of its session token

	// logged holds each worker's live session token for log redaction
	// (see redactSession); its own lock keeps it off the hot paths.
	loggedMu sync.Mutex
	logged   map[string]string
}

type challenge struct {
	expires time.Time
	token   int // index of the provider token it was issued to
	used    bool
}

// NewRegistrar validates cfg and builds a registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if len(cfg.ProviderTokens) == 0 {
		return nil, fmt.Errorf("registrar: provider_tokens: at least one token is required")
	}
	r := &Registrar{
		open:       cfg.OpenRegistration,
		ttl:        cfg.ChallengeTTL,
		maxChal:    cfg.MaxChallenges,
		interval:   cfg.HeartbeatInterval,
		logger:     cfg.Logger,
		allowed:    map[string]task.ModelVersion{},
		challenges: map[string]challenge{},
		sessions:   map[string][32]byte{},
	}
	for i, t := range cfg.ProviderTokens {
		if len(t) < 16 {
			return nil, fmt.Errorf("registrar: provider_tokens[%d]: must be at least 16 characters", i)
		}
		r.tokens = append(r.tokens, sha256.Sum256([]byte(t)))
		obs.AddSecrets(t)
	}
	r.outstanding = make([]int, len(r.tokens))
	if r.ttl <= 0 {
		r.ttl = 30 * time.Second
	}
	if r.maxChal <= 0 {
		r.maxChal = 10_000
	}
	if r.interval <= 0 || r.interval > time.Second {
		r.interval = time.Second
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	for i, m := range cfg.Models {
		if err := r.AllowModel(m); err != nil {
			return nil, fmt.Errorf("registrar: models[%d]: %w", i, err)
		}
	}
	return r, nil
}

// HeartbeatInterval is how often workers are told to heartbeat.
func (r *Registrar) HeartbeatInterval() time.Duration { return r.interval }

// OpenRegistration reports whether any model version is accepted.
func (r *Registrar) OpenRegistration() bool { return r.open }

// AllowModel adds a model version to the allow-list.
func (r *Registrar) AllowModel(m task.ModelVersion) error {
	if err := task.ValidateModelVersion(m); err != nil {
		return apierr.BadRequest("model", CodeInvalidRegistration, "%v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allowed[m.Name+" "+m.Digest] = m
	return nil
}

// AllowedModels lists the allow-list.
func (r *Registrar) AllowedModels() []task.ModelVersion {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]task.ModelVersion, 0, len(r.allowed))
	for _, m := range r.allowed {
		out = append(out, m)
	}
	return out
}

// Challenge issues a fresh single-use challenge (32 random bytes, hex) to
// a caller presenting a valid provider token (401 invalid_provider_token
// otherwise), so that nobody else can fill the table and lock workers out.
// Each token has its own bound (MaxChallenges outstanding): one provider
// flooding cannot starve another. Expired challenges leave from the front
// of a queue in issue order, O(1) amortised per call.
func (r *Registrar) Challenge(providerToken string, now time.Time) (string, error) {
	tok, ok := r.tokenIndex(providerToken)
	if !ok {
		return "", apierr.Unauthorized(CodeInvalidProviderToken, "a valid provider token is required to request a registration challenge")
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", apierr.Internal(err)
	}
	c := hex.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked(now)
	if r.outstanding[tok] >= r.maxChal {
		return "", apierr.RateLimited("too_many_challenges", "too many outstanding registration challenges", r.ttl)
	}
	exp := now.Add(r.ttl)
	r.challenges[c] = challenge{expires: exp, token: tok}
	r.expiry = append(r.expiry, queued{challenge: c, expires: exp})
	r.outstanding[tok]++
	return c, nil
}

// queued is one challenge in issue order, for pruning.
type queued struct {
	challenge string
	expires   time.Time
}

// pruneLocked drops expired challenges from the front of the issue-order
// queue (the TTL is fixed, so expiry follows issue order; a clock that
// steps back only delays pruning, and the per-token bound still holds).
func (r *Registrar) pruneLocked(now time.Time) {
	for r.head < len(r.expiry) && !now.Before(r.expiry[r.head].expires) {
		q := r.expiry[r.head]
		r.expiry[r.head] = queued{}
		r.head++
		if st, ok := r.challenges[q.challenge]; ok {
			delete(r.challenges, q.challenge)
			r.outstanding[st.token]--
		}
	}
	if r.head > 64 && r.head*2 > len(r.expiry) {
		n := copy(r.expiry, r.expiry[r.head:])
		clear(r.expiry[n:])
		r.expiry, r.head = r.expiry[:n], 0
	}
}

// Register checks a registration and, if it holds, opens a heartbeat session.
// Checks, in order: provider token (401 invalid_provider_token), body shape
// (400 invalid_registration), challenge known, unexpired and unused (401
// challenge_unknown / challenge_replayed; a challenge is spent by any attempt
// that gets this far), signature (401 invalid_signature), models in the
// allow-list unless open (403 model_not_registered).
func (r *Registrar) Register(_ context.Context, req *RegisterRequest, now time.Time) (*task.Registered, error) {
	if req == nil {
		return nil, apierr.BadRequest("", CodeInvalidRegistration, "empty registration")
	}
	if !r.tokenOK(req.ProviderToken) {
		return nil, apierr.Unauthorized(CodeInvalidProviderToken, "the provider token is not valid")
	}
	pub, sig, err := validateRegistration(req)
	if err != nil {
		return nil, err
	}
	if err := r.spendChallenge(req.Challenge, now); err != nil {
		return nil, err
	}
	msg := RegistrationMessage(req.Challenge, req.PublicKey, req.URL, req.Models)
	if err := keys.VerifyBytes(pub, sig, msg); err != nil {
		return nil, &apierr.Error{Status: http.StatusUnauthorized, Type: apierr.TypeAuthentication, Code: CodeInvalidSignature,
			Message: "the signature does not verify against the public key", Cause: err}
	}
	if !r.open {
		r.mu.Lock()
		for _, m := range req.Models {
			if _, ok := r.allowed[m.Name+" "+m.Digest]; !ok {
				r.mu.Unlock()
				return nil, apierr.Forbidden(CodeModelNotRegistered,
					fmt.Sprintf("model %q with digest %s is not registered with this gateway", m.Name, m.Digest))
			}
		}
		r.mu.Unlock()
	}
	var tok, cs [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, apierr.Internal(err)
	}
	if _, err := rand.Read(cs[:]); err != nil {
		return nil, apierr.Internal(err)
	}
	w := &task.Registered{
		WorkerID:         keys.WorkerID(pub),
		PublicKey:        req.PublicKey,
		URL:              req.URL,
		Models:           append([]task.ModelVersion(nil), req.Models...),
		GPUs:             append([]task.GPU(nil), req.GPUs...),
		MaxConcurrency:   req.MaxConcurrency,
		SessionToken:     hex.EncodeToString(tok[:]),
		Provider:         task.ProviderID(req.ProviderToken),
		CountersignToken: hex.EncodeToString(cs[:]),
	}
	r.mu.Lock()
	r.sessions[w.WorkerID] = sha256.Sum256([]byte(w.SessionToken))
	r.mu.Unlock()
	r.redactSession(w.WorkerID, w.SessionToken)
	r.logger.Info("worker registered", "worker", w.WorkerID, "url", w.URL, "models", len(w.Models), "gpus", len(w.GPUs))
	return w, nil
}

func (r *Registrar) tokenOK(token string) bool {
	_, ok := r.tokenIndex(token)
	return ok
}

// tokenIndex finds which provider token this is, comparing against every
// one in constant time.
func (r *Registrar) tokenIndex(token string) (int, bool) {
	h := sha256.Sum256([]byte(token))
	idx := -1
	for i, t := range r.tokens {
		if subtle.ConstantTimeCompare(h[:], t[:]) == 1 {
			idx = i
		}
	}
	return idx, idx >= 0 && token != ""
}

func (r *Registrar) spendChallenge(c string, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.challenges[c]
	switch {
	case !ok || !now.Before(st.expires):
		return apierr.Unauthorized(CodeChallengeUnknown, "the challenge is unknown or expired; request a new one")
	case st.used:
		return apierr.Unauthorized(CodeChallengeReplayed, "the challenge was already used; request a new one")
	}
	st.used = true
	r.challenges[c] = st
	return nil
}

// VerifySession checks a heartbeat's or deregistration's bearer token.
func (r *Registrar) VerifySession(workerID, token string) error {
	r.mu.Lock()
	want, ok := r.sessions[workerID]
	r.mu.Unlock()
	if !ok {
		return apierr.Unauthorized(CodeUnknownWorker, "this worker is not registered; register again")
	}
	got := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return apierr.Unauthorized(CodeInvalidSession, "the session token is not valid for this worker")
	}
	return nil
}

// Forget ends a worker's session (on deregistration or removal).
func (r *Registrar) Forget(workerID string) {
	r.mu.Lock()
	delete(r.sessions, workerID)
	r.mu.Unlock()
	r.redactSession(workerID, "")
}

func invalid(param, format string, args ...any) error {
	return apierr.BadRequest(param, CodeInvalidRegistration, format, args...)
}

// validateRegistration checks the shape of every field from outside.
func validateRegistration(req *RegisterRequest) (pub *eddsa.PublicKey, sig []byte, err error) {
	if len(req.Challenge) != 64 || !task.IsLowerHex(req.Challenge) {
		return nil, nil, invalid("challenge", "challenge must be 64 lowercase hex characters")
	}
	pub, err = keys.ParsePublicKey(req.PublicKey)
	if err != nil {
		return nil, nil, invalid("public_key", "%v", err)
	}
	if len(req.Signature) == 0 || len(req.Signature) > 256 {
		return nil, nil, invalid("signature", "signature must be 1..256 hex characters")
	}
	sig, err = hex.DecodeString(req.Signature)
	if err != nil {
		return nil, nil, invalid("signature", "signature is not hex")
	}
	if err := ValidateWorkerURL(req.URL); err != nil {
		return nil, nil, invalid("url", "url: %v", err)
	}
	if len(req.Models) == 0 || len(req.Models) > task.MaxRegisterModels {
		return nil, nil, invalid("models", "a worker serves 1..%d models", task.MaxRegisterModels)
	}
	seen := map[string]bool{}
	for i, m := range req.Models {
		if err := task.ValidateModelVersion(m); err != nil {
			return nil, nil, invalid("models", "models[%d]: %v", i, err)
		}
		if seen[m.Name] {
			return nil, nil, invalid("models", "models[%d]: %q listed twice", i, m.Name)
		}
		seen[m.Name] = true
	}
	if len(req.GPUs) > task.MaxRegisterGPUs {
		return nil, nil, invalid("gpus", "at most %d GPUs", task.MaxRegisterGPUs)
	}
	for i, g := range req.GPUs {
		if err := task.ValidateGPU(g); err != nil {
			return nil, nil, invalid("gpus", "gpus[%d]: %v", i, err)
		}
	}
	if req.MaxConcurrency < 1 || req.MaxConcurrency > task.MaxWorkerConcurrent {
		return nil, nil, invalid("max_concurrency", "max_concurrency must be in [1, %d]", task.MaxWorkerConcurrent)
	}
	return pub, sig, nil
}

// redactSession registers a worker's new session token (empty: none) with
// the process's log redaction and retires its previous one, so the set of
// secrets follows the live sessions instead of growing with churn.
func (r *Registrar) redactSession(workerID, token string) {
	r.loggedMu.Lock()
	defer r.loggedMu.Unlock()
	if r.logged == nil {
		r.logged = map[string]string{}
	}
	if old, ok := r.logged[workerID]; ok {
		obs.ForgetSecret(old)
		delete(r.logged, workerID)
	}
	if token != "" {
		obs.AddSecrets(token)
		r.logged[workerID] = token
	}
}
