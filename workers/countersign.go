package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// PathCountersign is the worker route the prover calls to have a batch
// root signed; mount it with WithRoute("POST "+PathCountersign, cs).
const PathCountersign = "/v1/worker/countersign"

// MaxCountersignLeaves is the largest batch a worker will sign.
const MaxCountersignLeaves = 1024

// CountersignRequest asks a worker to sign a receipt batch: the completion
// records in leaf order, the model version they claim and the batch's
// sequence, circuit capacity and time (when it was cut; UTC, RFC 3339 with
// nanoseconds on the wire).
type CountersignRequest struct {
	Sequence    uint64            `json:"sequence"`
	Capacity    int               `json:"capacity"`
	Model       string            `json:"model"`
	ModelDigest string            `json:"model_digest"`
	Time        time.Time         `json:"time"`
	Completions []task.Completion `json:"completions"`
}

// CountersignResponse is the worker's signature over
// receipts.BatchMessageV2(root, model version, totals, sequence, time).
type CountersignResponse struct {
	Root      string `json:"root"`       // 0x-hex batch root the worker computed
	Signature string `json:"signature"`  // base64 EdDSA signature
	PublicKey string `json:"public_key"` // base64 compressed EdDSA public key
	// Repeated is true when the worker had already signed this very batch
	// (same sequence, root and message) and answers with that signature:
	// a prover retrying after a lost response gets the same answer.
	Repeated bool `json:"repeated,omitempty"`
}

// CompletionSource is what the countersigner needs of the agent: the
// completion records it produced itself.
type CompletionSource interface {
	Produced(requestID string) (*task.Completion, bool)
}

// RecordAger is an optional CompletionSource extension (the Agent has it):
// RecordExpired reports whether a record produced at t has aged out of the
// source, so an unknown record that old is refused as record_expired.
type RecordAger interface {
	RecordExpired(t time.Time) bool
}

// SignedBatch is what a worker remembers of a batch it countersigned.
type SignedBatch struct {
	Sequence   uint64    `json:"sequence"`
	Root       string    `json:"root"`    // 0x hex
	Message    string    `json:"message"` // the signed message, 0x hex field element
	Signature  string    `json:"signature"`
	SignedAt   time.Time `json:"signed_at"`
	RequestIDs []string  `json:"request_ids"`
}

// CountersignLog is the countersigner's memory of every batch it signed.
// The Agent implements it durably (its record store); a CompletionSource
// that does not gets an in-memory log, which forgets on restart.
type CountersignLog interface {
	// SignOnce signs and records b, atomically with respect to other calls,
	// unless one of b.RequestIDs is already recorded: then it signs nothing
	// and returns the recorded batch of each such ID. It returns once the
	// record is durable, so a signature never leaves a worker that could
	// forget it.
	SignOnce(b *SignedBatch, sign func() (signature string, err error)) (signed *SignedBatch, prior map[string]*SignedBatch, err error)
	// Signed returns the recorded batch of each of ids that has one.
	Signed(ids []string) map[string]*SignedBatch
}

// Refusal codes of a countersign, per record (RefusedRecord.Code). All are
// permanent but already_countersigned, which names the batch the record
// was signed in so that the prover can prove that batch instead.
const (
	RefuseUnknownRecord        = "unknown_record"
	RefuseRecordMismatch       = "record_mismatch"
	RefuseRecordExpired        = "record_expired"
	RefuseModelMismatch        = "model_mismatch"
	RefuseDuplicateInBatch     = "duplicate_in_batch"
	RefuseInvalidRecord        = "invalid_record"
	RefuseAlreadyCountersigned = "already_countersigned"
)

// RefusedRecord is one record a worker refused to countersign, and why.
type RefusedRecord struct {
	RequestID string `json:"request_id"`
	Code      string `json:"code"`
	Reason    string `json:"reason"`
	// Sequence and Root name the batch an already_countersigned record was
	// signed in.
	Sequence uint64 `json:"sequence,omitempty"`
	Root     string `json:"root,omitempty"`
}

// CountersignRefusal is the body of a 403 countersign_refused: the error
// envelope and every record refused.
type CountersignRefusal struct {
	Error   task.EventError `json:"error"`
	Refused []RefusedRecord `json:"refused"`
}

// RefusedError is a countersign refusal (403 countersign_refused) naming
// the records refused; errors.As finds the *apierr.Error inside.
type RefusedError struct {
	Err     *apierr.Error
	Records []RefusedRecord
}

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// CodeCountersignUnauthorized answers a countersign request without the
// credential the gateway issued to this worker at registration.
const CodeCountersignUnauthorized = "countersign_unauthorized"

// BatchSigner is the worker's EdDSA key as the countersigner needs it
// (satisfied by *keys.Key): Sign signs a message of canonical 32-byte field
// elements with Poseidon2, as the batch circuit verifies.
type BatchSigner interface {
	Sign(msg []byte) ([]byte, error)
	Public() *eddsa.PublicKey
}

// Countersigner signs receipt batches for the prover, but only when every
// leaf is a completion record this worker produced, unchanged, and never
// signed into another batch.
type Countersigner struct {
	key      BatchSigner
	workerID string
	src      CompletionSource
	log      CountersignLog
	logger   *slog.Logger
	metrics  *obs.Metrics
	clock    clock.Clock
	// credential returns the countersign credential the gateway issued at
	// registration; nil or "" refuses every HTTP request (ServeHTTP).
	credential func() string
}

// CountersignOption adjusts NewCountersigner.
type CountersignOption func(*Countersigner)

// WithCountersignCredential makes ServeHTTP accept only requests bearing
// "Authorization: Bearer <credential>", where credential is what current
// returns (Registerer.CountersignToken: the credential the gateway issued
// at registration and gave the provers through the ledger). Without this
// option ServeHTTP refuses every request.
func WithCountersignCredential(current func() string) CountersignOption {
	return func(c *Countersigner) { c.credential = current }
}

// WithCountersignMetrics counts refusals (tollgate.worker.records).
func WithCountersignMetrics(m *obs.Metrics) CountersignOption {
	return func(c *Countersigner) { c.metrics = m }
}

// WithCountersignClock sets the clock stamping SignedBatch.SignedAt.
func WithCountersignClock(clk clock.Clock) CountersignOption {
	return func(c *Countersigner) { c.clock = clk }
}

// NewCountersigner returns a countersigner signing with key; src is
// normally the worker's *Agent, whose record store also keeps what was
// signed (CountersignLog). Mount it on the worker's handler with
// WithRoute("POST "+PathCountersign, cs).
func NewCountersigner(key BatchSigner, src CompletionSource, logger *slog.Logger, opts ...CountersignOption) *Countersigner {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Countersigner{key: key, workerID: receipts.WorkerID(key.Public()), src: src, logger: logger, clock: clock.Real{}}
	if l, ok := src.(CountersignLog); ok {
		c.log = l
	} else {
		c.log = &memorySignedLog{byID: map[string]*SignedBatch{}}
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// refusedRecords collects the records refused in one request.
type refusedRecords []RefusedRecord

func (r *refusedRecords) add(id, code, format string, args ...any) {
	*r = append(*r, RefusedRecord{RequestID: id, Code: code, Reason: fmt.Sprintf(format, args...)})
}

func (c *Countersigner) refused(ctx context.Context, req *CountersignRequest, r refusedRecords) error {
	first := r[0]
	msg := fmt.Sprintf("%d of %d records refused; request %q: %s", len(r), len(req.Completions), first.RequestID, first.Reason)
	codes := map[string]int{}
	for _, rr := range r {
		codes[rr.Code]++
	}
	for code, n := range codes {
		c.metrics.RecordWorkerRecords(ctx, "refused_"+code, n)
	}
	c.logger.Warn("countersign refused", "worker", c.workerID, "sequence", req.Sequence, "refused", len(r),
		"leaves", len(req.Completions), "request_id", first.RequestID, "code", first.Code, "reason", first.Reason, "codes", codes)
	return &RefusedError{Err: apierr.Forbidden("countersign_refused", msg), Records: r}
}

// Countersign checks req against the worker's own records and signs the
// batch root it computes itself, once. It refuses (403 countersign_refused,
// a *RefusedError naming each record and why) any leaf it did not produce,
// that differs from its record, that has aged out of its store, or that it
// already signed into another batch. The same batch asked again (same
// sequence, root and message: a prover retrying after a lost response)
// gets the signature it was given the first time.
func (c *Countersigner) Countersign(ctx context.Context, req *CountersignRequest) (*CountersignResponse, error) {
	n := len(req.Completions)
	if req.Capacity < 2 || req.Capacity > MaxCountersignLeaves || req.Capacity&(req.Capacity-1) != 0 || n == 0 || n > req.Capacity {
		return nil, apierr.BadRequest("capacity", "invalid_batch", "batch of %d leaves at capacity %d", n, req.Capacity)
	}
	weights, err := receipts.ParseDigest(req.ModelDigest)
	if err != nil {
		return nil, apierr.BadRequest("model_digest", "invalid_batch", "%v", err)
	}
	if req.Time.IsZero() || req.Time.UnixNano() < 0 || req.Time.Location() != time.UTC {
		return nil, apierr.BadRequest("time", "invalid_batch", "batch time %s: want a UTC time after 1970", req.Time)
	}
	// The batch as asked: its root and message from the records in the
	// request. Every record is then checked against the worker's own, so
	// what is signed is the worker's records, never the prover's claim.
	leaves := make([]fr.Element, req.Capacity)
	bad := map[string]bool{}
	var refused refusedRecords
	var totalPrompt, totalCompletion uint64
	ids := make([]string, 0, n)
	seen := make(map[string]bool, n)
	for i := range req.Completions {
		got := &req.Completions[i]
		if seen[got.RequestID] {
			refused.add(got.RequestID, RefuseDuplicateInBatch, "request %q appears twice in the batch", got.RequestID)
			continue
		}
		seen[got.RequestID] = true
		ids = append(ids, got.RequestID)
		r := receipts.Receipt{RequestID: got.RequestID, RequestDigest: got.RequestDigest, ResponseDigest: got.ResponseDigest,
			Subject: got.Subject, Time: got.Time, Model: got.Model, ModelDigest: got.ModelDigest,
			PromptTokens: uint64(max(got.PromptTokens, 0)), CompletionTokens: uint64(max(got.CompletionTokens, 0))}
		if got.PromptTokens < 0 || got.CompletionTokens < 0 {
			refused.add(got.RequestID, RefuseInvalidRecord, "request %q has negative token counts", got.RequestID)
			bad[got.RequestID] = true
			continue
		}
		if _, _, leaves[i], err = r.LeafFields(); err != nil {
			refused.add(got.RequestID, RefuseInvalidRecord, "request %q: %v", got.RequestID, err)
			bad[got.RequestID] = true
			continue
		}
		totalPrompt += r.PromptTokens
		totalCompletion += r.CompletionTokens
	}
	root := receipts.MerkleRoot(leaves)
	mv := receipts.ModelVersionCommitment(req.Model, weights)
	msg := receipts.BatchMessageV2(root, mv, uint64(n), totalPrompt, totalCompletion, req.Sequence, uint64(req.Time.UnixNano()))
	sort.Strings(ids)
	sb := &SignedBatch{Sequence: req.Sequence, Root: receipts.ElementHex(root), Message: receipts.ElementHex(msg),
		SignedAt: c.clock.Now().UTC(), RequestIDs: ids}
	resp := &CountersignResponse{Root: sb.Root, PublicKey: base64.StdEncoding.EncodeToString(c.key.Public().Bytes())}

	// What was signed before comes first: the same batch again gets its
	// signature back (even once its records have aged out), a record signed
	// into another batch is refused whatever else holds.
	if len(refused) == 0 {
		if same := samePrior(sb, c.log.Signed(ids)); same != nil {
			c.logger.Info("countersign repeated: answering with the stored signature", "worker", c.workerID, "sequence", req.Sequence, "leaves", n)
			resp.Signature, resp.Repeated = same.Signature, true
			return resp, nil
		}
	}
	signedElsewhere := c.alreadySigned(sb, &refused)
	for i := range req.Completions {
		got := &req.Completions[i]
		if bad[got.RequestID] || signedElsewhere[got.RequestID] {
			continue
		}
		own, ok := c.src.Produced(got.RequestID)
		switch {
		case !ok:
			if ag, ok := c.src.(RecordAger); ok && ag.RecordExpired(got.Time) {
				refused.add(got.RequestID, RefuseRecordExpired, "request %q: its completion record (%s) has aged out of this worker's store", got.RequestID, got.Time.UTC().Format(time.RFC3339))
			} else {
				refused.add(got.RequestID, RefuseUnknownRecord, "request %q was not produced by this worker", got.RequestID)
			}
		case !sameCompletion(own, got) || own.WorkerID != c.workerID:
			refused.add(got.RequestID, RefuseRecordMismatch, "request %q does not match this worker's completion record", got.RequestID)
		case own.Model != req.Model || !strings.EqualFold(own.ModelDigest, req.ModelDigest):
			refused.add(got.RequestID, RefuseModelMismatch, "request %q ran model %s@%s, not the batch's %s@%s", got.RequestID, own.Model, own.ModelDigest, req.Model, req.ModelDigest)
		}
	}
	if len(refused) > 0 {
		return nil, c.refused(ctx, req, refused)
	}
	signed, prior, err := c.log.SignOnce(sb, func() (string, error) {
		msgBytes := msg.Bytes()
		sig, err := c.key.Sign(msgBytes[:])
		if err != nil {
			return "", fmt.Errorf("sign batch: %w", err)
		}
		return base64.StdEncoding.EncodeToString(sig), nil
	})
	if err != nil {
		return nil, apierr.Internal(fmt.Errorf("countersign batch %d: %w", req.Sequence, err))
	}
	if prior != nil { // signed by a concurrent request since the lookup above
		if same := samePrior(sb, prior); same != nil {
			resp.Signature, resp.Repeated = same.Signature, true
			return resp, nil
		}
		for _, id := range ids {
			if p := prior[id]; p != nil {
				refused = append(refused, alreadyRefusal(id, p))
			}
		}
		return nil, c.refused(ctx, req, refused)
	}
	c.logger.Info("countersigned batch", "worker", c.workerID, "model", req.Model, "sequence", req.Sequence, "leaves", n)
	resp.Signature = signed.Signature
	return resp, nil
}

// alreadySigned adds to r the records of sb that were signed into another
// batch, and returns them.
func (c *Countersigner) alreadySigned(sb *SignedBatch, r *refusedRecords) map[string]bool {
	out := map[string]bool{}
	prior := c.log.Signed(sb.RequestIDs)
	for _, id := range sb.RequestIDs {
		if p := prior[id]; p != nil {
			*r = append(*r, alreadyRefusal(id, p))
			out[id] = true
		}
	}
	return out
}

func alreadyRefusal(id string, p *SignedBatch) RefusedRecord {
	return RefusedRecord{RequestID: id, Code: RefuseAlreadyCountersigned, Sequence: p.Sequence, Root: p.Root,
		Reason: fmt.Sprintf("request %q was already countersigned in batch %d (root %s)", id, p.Sequence, p.Root)}
}

// samePrior returns the stored batch if every request of sb was signed in
// exactly sb (same sequence, root and message), else nil.
func samePrior(sb *SignedBatch, prior map[string]*SignedBatch) *SignedBatch {
	var first *SignedBatch
	for _, id := range sb.RequestIDs {
		p := prior[id]
		if p == nil || p.Sequence != sb.Sequence || p.Root != sb.Root || p.Message != sb.Message || len(p.RequestIDs) != len(sb.RequestIDs) {
			return nil
		}
		first = p
	}
	return first
}

// memorySignedLog is the CountersignLog of a source that has none: it
// forgets on restart (tests, the proving bench).
type memorySignedLog struct {
	mu   sync.Mutex
	byID map[string]*SignedBatch
}

func (m *memorySignedLog) Signed(ids []string) map[string]*SignedBatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*SignedBatch{}
	for _, id := range ids {
		if p := m.byID[id]; p != nil {
			out[id] = p
		}
	}
	return out
}

func (m *memorySignedLog) SignOnce(b *SignedBatch, sign func() (string, error)) (*SignedBatch, map[string]*SignedBatch, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var prior map[string]*SignedBatch
	for _, id := range b.RequestIDs {
		if p := m.byID[id]; p != nil {
			if prior == nil {
				prior = map[string]*SignedBatch{}
			}
			prior[id] = p
		}
	}
	if prior != nil {
		return nil, prior, nil
	}
	sig, err := sign()
	if err != nil {
		return nil, nil, err
	}
	stored := *b
	stored.Signature = sig
	for _, id := range b.RequestIDs {
		m.byID[id] = &stored
	}
	return &stored, nil, nil
}

func sameCompletion(a, b *task.Completion) bool {
	return a.RequestID == b.RequestID && a.WorkerID == b.WorkerID && a.Model == b.Model &&
		strings.EqualFold(a.ModelDigest, b.ModelDigest) && strings.EqualFold(a.RequestDigest, b.RequestDigest) &&
		strings.EqualFold(a.ResponseDigest, b.ResponseDigest) && a.Subject == b.Subject &&
		a.PromptTokens == b.PromptTokens && a.CompletionTokens == b.CompletionTokens && a.Time.Equal(b.Time)
}

// maxCountersignBody bounds a countersign request (1024 records).
const maxCountersignBody = 4 << 20

// ServeHTTP serves POST /v1/worker/countersign. Only the gateway's provers
// may call it: the request must carry the countersign credential
// (WithCountersignCredential), compared in constant time; anything else is
// 401 before the body is read.
func (c *Countersigner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !c.authorized(r) {
		c.logger.Warn("countersign refused: missing or wrong credential", "worker", c.workerID, "remote", r.RemoteAddr)
		WriteError(w, apierr.Unauthorized(CodeCountersignUnauthorized, "the countersign credential is missing or wrong"))
		return
	}
	var req CountersignRequest
	if err := decodeJSON(w, r, maxCountersignBody, &req); err != nil {
		WriteError(w, err)
		return
	}
	resp, err := c.Countersign(r.Context(), &req)
	var re *RefusedError
	if errors.As(err, &re) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(re.Err.Status)
		json.NewEncoder(w).Encode(CountersignRefusal{Error: *eventError(re.Err), Refused: re.Records})
		return
	}
	if err != nil {
		WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (c *Countersigner) authorized(r *http.Request) bool {
	if c.credential == nil {
		return false
	}
	want := c.credential()
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || want == "" {
		return false
	}
	// Hashing first keeps the comparison constant-time in the length too.
	g, wh := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], wh[:]) == 1
}

// RequestCountersign asks the worker at baseURL to countersign req,
// presenting credential (the worker's countersign credential). A refusal
// comes back as a *RefusedError (errors.As also finds its *apierr.Error),
// any other non-200 answer as the worker's *apierr.Error.
func RequestCountersign(ctx context.Context, client *http.Client, baseURL, credential string, req *CountersignRequest) (*CountersignResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+PathCountersign, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if credential != "" {
		hr.Header.Set("Authorization", "Bearer "+credential)
	}
	res, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		var eb CountersignRefusal
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
			ae := &apierr.Error{Status: res.StatusCode, Type: eb.Error.Type, Code: eb.Error.Code, Message: eb.Error.Message}
			if res.StatusCode == http.StatusForbidden && eb.Error.Code == "countersign_refused" {
				return nil, &RefusedError{Err: ae, Records: eb.Refused}
			}
			return nil, ae
		}
		return nil, fmt.Errorf("countersign: worker answered %s", res.Status)
	}
	var out CountersignResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	return &out, nil
}
