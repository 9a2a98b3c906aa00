package workers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/internal/apierr"
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
	Sequence    uint64       `json:"sequence"`
	Capacity    int          `json:"capacity"`
	Model       string       `json:"model"`
	ModelDigest string       `json:"model_digest"`
	Time        time.Time    `json:"time"`
	Completions []Completion `json:"completions"`
}

// CountersignResponse is the worker's signature over
// receipts.BatchMessageV2(root, model version, totals, sequence, time).
type CountersignResponse struct {
	Root      string `json:"root"`       // 0x-hex batch root the worker computed
	Signature string `json:"signature"`  // base64 EdDSA signature
	PublicKey string `json:"public_key"` // base64 compressed EdDSA public key
}

// CompletionSource is what the countersigner needs of the agent: the
// completion records it produced itself.
type CompletionSource interface {
	Produced(requestID string) (*Completion, bool)
}

// BatchSigner is the worker's EdDSA key as the countersigner needs it
// (satisfied by *keys.Key): Sign signs a message of canonical 32-byte field
// elements with Poseidon2, as the batch circuit verifies.
type BatchSigner interface {
	Sign(msg []byte) ([]byte, error)
	Public() *eddsa.PublicKey
}

// Countersigner signs receipt batches for the prover, but only when every
// leaf is a completion record this worker produced, unchanged.
type Countersigner struct {
	key      BatchSigner
	workerID string
	src      CompletionSource
	logger   *slog.Logger
}

// NewCountersigner returns a countersigner signing with key; src is
// normally the worker's *Agent. Mount it on the worker's handler with
// WithRoute("POST "+PathCountersign, cs).
func NewCountersigner(key BatchSigner, src CompletionSource, logger *slog.Logger) *Countersigner {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Countersigner{key: key, workerID: receipts.WorkerID(key.Public()), src: src, logger: logger}
}

func refuse(format string, args ...any) error {
	return apierr.Forbidden("countersign_refused", fmt.Sprintf(format, args...))
}

// Countersign checks req against the worker's own records and signs the
// batch root it computes itself. It refuses (403 countersign_refused) any
// leaf it did not produce or that differs from its record.
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
	leaves := make([]fr.Element, req.Capacity)
	seen := make(map[string]bool, n)
	var totalPrompt, totalCompletion uint64
	for i := range req.Completions {
		got := &req.Completions[i]
		if seen[got.RequestID] {
			return nil, refuse("request %q appears twice in the batch", got.RequestID)
		}
		seen[got.RequestID] = true
		own, ok := c.src.Produced(got.RequestID)
		if !ok {
			c.logger.Warn("countersign refused: unknown request", "request_id", got.RequestID, "worker", c.workerID)
			return nil, refuse("request %q was not produced by this worker", got.RequestID)
		}
		if !sameCompletion(own, got) || own.WorkerID != c.workerID {
			c.logger.Warn("countersign refused: record differs", "request_id", got.RequestID, "worker", c.workerID)
			return nil, refuse("request %q does not match this worker's completion record", got.RequestID)
		}
		if own.Model != req.Model || !strings.EqualFold(own.ModelDigest, req.ModelDigest) {
			return nil, refuse("request %q ran model %s@%s, not the batch's %s@%s", got.RequestID, own.Model, own.ModelDigest, req.Model, req.ModelDigest)
		}
		r := receipts.Receipt{RequestID: own.RequestID, RequestDigest: own.RequestDigest, ResponseDigest: own.ResponseDigest,
			Subject: own.Subject, Time: own.Time, Model: own.Model, ModelDigest: own.ModelDigest,
			PromptTokens: uint64(max(own.PromptTokens, 0)), CompletionTokens: uint64(max(own.CompletionTokens, 0))}
		if own.PromptTokens < 0 || own.CompletionTokens < 0 {
			return nil, refuse("request %q has negative token counts", got.RequestID)
		}
		if _, _, leaves[i], err = r.LeafFields(); err != nil {
			return nil, refuse("request %q: %v", got.RequestID, err)
		}
		totalPrompt += r.PromptTokens
		totalCompletion += r.CompletionTokens
	}
	root := receipts.MerkleRoot(leaves)
	mv := receipts.ModelVersionCommitment(req.Model, weights)
	msg := receipts.BatchMessageV2(root, mv, uint64(n), totalPrompt, totalCompletion, req.Sequence, uint64(req.Time.UnixNano()))
	msgBytes := msg.Bytes()
	sig, err := c.key.Sign(msgBytes[:])
	if err != nil {
		return nil, apierr.Internal(fmt.Errorf("sign batch: %w", err))
	}
	c.logger.Info("countersigned batch", "worker", c.workerID, "model", req.Model, "sequence", req.Sequence, "leaves", n)
	return &CountersignResponse{Root: receipts.ElementHex(root), Signature: base64.StdEncoding.EncodeToString(sig),
		PublicKey: base64.StdEncoding.EncodeToString(c.key.Public().Bytes())}, nil
}

func sameCompletion(a, b *Completion) bool {
	return a.RequestID == b.RequestID && a.WorkerID == b.WorkerID && a.Model == b.Model &&
		strings.EqualFold(a.ModelDigest, b.ModelDigest) && strings.EqualFold(a.RequestDigest, b.RequestDigest) &&
		strings.EqualFold(a.ResponseDigest, b.ResponseDigest) && a.Subject == b.Subject &&
		a.PromptTokens == b.PromptTokens && a.CompletionTokens == b.CompletionTokens && a.Time.Equal(b.Time)
}

// maxCountersignBody bounds a countersign request (1024 records).
const maxCountersignBody = 4 << 20

// ServeHTTP serves POST /v1/worker/countersign.
func (c *Countersigner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req CountersignRequest
	if err := decodeJSON(w, r, maxCountersignBody, &req); err != nil {
		WriteError(w, err)
		return
	}
	resp, err := c.Countersign(r.Context(), &req)
	if err != nil {
		WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// RequestCountersign asks the worker at baseURL to countersign req.
// A refusal comes back as the worker's *apierr.Error.
func RequestCountersign(ctx context.Context, client *http.Client, baseURL string, req *CountersignRequest) (*CountersignResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+PathCountersign, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
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
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
			return nil, &apierr.Error{Status: res.StatusCode, Type: eb.Error.Type, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, fmt.Errorf("countersign: worker answered %s", res.Status)
	}
	var out CountersignResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	return &out, nil
}
