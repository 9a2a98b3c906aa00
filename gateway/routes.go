package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/ids"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/valyala/fasthttp"
)

// Header names.
const (
	HeaderRequestID = "X-Request-Id"
	HeaderReceipt   = "X-Tollgate-Receipt"
)

var errMethod = &apierr.Error{Status: fasthttp.StatusMethodNotAllowed, Type: apierr.TypeInvalidRequest, Code: "method_not_allowed", Message: "method not allowed on this route"}

// handle is fasthttp's entry point: it assigns the request ID, starts
// observing the request (continuing a client's W3C traceparent), routes,
// and renders any error. An inference that outlives the handler as a
// stream detaches the observation and ends it itself.
func (s *Server) handle(rc *fasthttp.RequestCtx) {
	reqID := s.requestID(rc)
	rc.Response.Header.Set(HeaderRequestID, reqID)
	path := string(rc.Path())
	req := s.deps.Obs.StartRequest(context.Background(), &rc.Request.Header, obs.RouteOf(path), s.clock.Now())
	if err := s.route(rc, reqID, path, &req); err != nil {
		ae := s.writeError(req.Context(context.Background()), rc, reqID, err)
		if ae.Status == fasthttp.StatusMethodNotAllowed {
			rc.Response.Header.Set("Allow", allowFor(path))
		}
		s.decorate(rc)
		req.End(ae.Status, errorType(ae), s.clock.Now())
		return
	}
	s.decorate(rc)
	req.End(rc.Response.StatusCode(), "", s.clock.Now()) // no-op for a stream, which ends it itself
}

// errorType labels a failed request in metrics and spans: its code, else
// its type.
func errorType(ae *apierr.Error) string {
	if ae.Code != "" {
		return ae.Code
	}
	return ae.Type
}

// requestID honours a valid client X-Request-Id (1–128 printable ASCII
// characters) and otherwise makes one.
func (s *Server) requestID(rc *fasthttp.RequestCtx) string {
	if v := rc.Request.Header.Peek(HeaderRequestID); len(v) > 0 && ids.ValidRequestID(string(v)) {
		return string(v)
	}
	return ids.Request()
}

func (s *Server) route(rc *fasthttp.RequestCtx, reqID, path string, req *obs.Request) error {
	get, post := rc.IsGet() || rc.IsHead(), rc.IsPost()
	switch {
	case s.isPreflight(rc):
		return s.preflight(req.Context(context.Background()), rc, reqID, path)
	case path == "/" && get:
		return s.statusPage(rc)
	case path == "/metrics" && get:
		// Unauthenticated, as Prometheus targets usually are: aggregate
		// counts and latencies by route, model and status, no secrets.
		s.deps.Obs.FasthttpMetricsHandler()(rc)
		return nil
	case path == "/healthz":
		return s.healthz(rc)
	case path == "/readyz":
		return s.readyz(rc)
	case path == "/v1/chat/completions" && post:
		return s.chat(rc, reqID, req)
	case path == "/v1/completions" && post:
		return s.completions(rc, reqID, req)
	case path == "/v1/embeddings" && post:
		return s.embeddings(rc, reqID, req)
	case path == "/v1/responses" && post:
		return s.createResponse(rc, reqID, req)
	case strings.HasPrefix(path, "/v1/responses/") && len(path) > len("/v1/responses/"):
		return s.responseRoute(rc, strings.TrimPrefix(path, "/v1/responses/"))
	case path == "/v1/models" && get:
		return s.listModels(rc)
	case strings.HasPrefix(path, "/v1/models/") && get:
		return s.getModel(rc, strings.TrimPrefix(path, "/v1/models/"))
	case path == "/v1/workers" && get:
		return s.listWorkers(rc)
	case path == "/v1/admin/models" && post:
		return s.allowModel(rc)
	case path == "/v1/admin/revoke" && post:
		return s.revokeWorker(rc)
	case path == "/v1/admin/reinstate" && post:
		return s.reinstateWorker(rc)
	case path == "/v1/zk/registry" && get:
		return s.getRegistry(rc)
	case path == "/v1/admin/disputes" && get:
		return s.listDisputes(rc)
	case strings.HasPrefix(path, "/v1/workers/") && post:
		return s.workerRoute(rc, reqID, strings.TrimPrefix(path, "/v1/workers/"))
	case path == "/v1/receipts" && get:
		return s.exportReceipts(rc)
	case strings.HasPrefix(path, "/v1/receipts/") && get:
		return s.getReceipt(rc, strings.TrimPrefix(path, "/v1/receipts/"))
	case strings.HasPrefix(path, "/v1/zk/keys/") && get:
		return s.getVerifyingKey(rc, strings.TrimPrefix(path, "/v1/zk/keys/"))
	case s.cfg.Pprof && (path == "/debug/pprof" || strings.HasPrefix(path, "/debug/pprof/")):
		return s.pprof(rc)
	}
	if allowFor(path) != "" {
		return errMethod // handle adds Allow
	}
	return apierr.NotFound("", "unknown_url", "Unknown request URL: %s %s.", rc.Method(), path)
}

// writeError is the one place errors become responses: OpenAI's envelope,
// the error's status, Retry-After for 429/503 with a delay. Server errors
// are logged with their cause (and ctx's trace ID); the client sees only
// the message.
func (s *Server) writeError(ctx context.Context, rc *fasthttp.RequestCtx, reqID string, err error) *apierr.Error {
	ae := apierr.From(err)
	level := slog.LevelDebug
	if ae.Status >= 500 {
		level = slog.LevelError
		if ae.Status == fasthttp.StatusServiceUnavailable || ae.Status == fasthttp.StatusGatewayTimeout {
			level = slog.LevelWarn
		}
	}
	s.log.Log(ctx, level, "request failed", "request_id", reqID, "status", ae.Status, "code", ae.Code, "err", err)
	// A receipt recorded for the request (a generation billed for what it
	// produced before its deadline) stays named on the error, and so do
	// the rate limits the request was counted against.
	var kept [][2]string
	for _, name := range append([]string{HeaderReceipt}, rateHeaderNames...) {
		if v := rc.Response.Header.Peek(name); len(v) > 0 {
			kept = append(kept, [2]string{name, string(v)})
		}
	}
	rc.Response.Reset()
	rc.Response.Header.Set(HeaderRequestID, reqID)
	for _, h := range kept {
		rc.Response.Header.Set(h[0], h[1])
	}
	rc.SetStatusCode(ae.Status)
	if ae.RetryAfter > 0 {
		rc.Response.Header.Set("Retry-After", strconv.Itoa(int(math.Ceil(ae.RetryAfter.Seconds()))))
	}
	rc.SetContentType("application/json")
	rc.SetBody(openai.MarshalError(ae))
	return ae
}

// writeJSON writes v with status 200.
func writeJSON(rc *fasthttp.RequestCtx, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return apierr.Internal(err)
	}
	rc.SetContentType("application/json")
	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetBody(b)
	return nil
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(rc *fasthttp.RequestCtx) (string, bool) {
	h := rc.Request.Header.Peek("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		return "", false
	}
	tok := strings.TrimSpace(string(h[len(prefix):]))
	return tok, tok != ""
}

var (
	errNoKey  = apierr.Unauthorized("missing_api_key", "You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'.")
	errBadKey = apierr.Unauthorized("invalid_api_key", "Incorrect API key provided.")
)

// authenticate returns the key of a client that may make requests. Lookup
// is by SHA-256 of the token, so the comparison does not leak the key
// through timing. A billing key is refused (403): it only reads receipts.
func (s *Server) authenticate(rc *fasthttp.RequestCtx) (*APIKey, error) {
	tok, ok := bearer(rc)
	if !ok {
		return nil, errNoKey
	}
	k := s.keys[sha256.Sum256([]byte(tok))]
	if k == nil {
		return nil, errBadKey
	}
	if k.Role == RoleBilling {
		return nil, errBillingNoClient
	}
	return k, nil
}

var errBillingNoClient = apierr.Forbidden("billing_key", "A billing key reads receipts; it cannot make requests.")

// authenticateAdmin accepts only admin keys.
func (s *Server) authenticateAdmin(rc *fasthttp.RequestCtx) error {
	tok, ok := bearer(rc)
	if !ok {
		return errNoKey
	}
	h := sha256.Sum256([]byte(tok))
	if s.admin[h] {
		return nil
	}
	if s.keys[h] != nil {
		return apierr.Forbidden("admin_key_required", "This route needs an admin key.")
	}
	return errBadKey
}

// receiptReader is who reads receipts: admin and billing keys read every
// receipt (all), a client key only those whose subject is its own ID.
type receiptReader struct {
	all     bool
	subject string
}

// authenticateReceipts accepts client, billing and admin keys and says
// which receipts the caller may see.
func (s *Server) authenticateReceipts(rc *fasthttp.RequestCtx) (receiptReader, error) {
	tok, ok := bearer(rc)
	if !ok {
		return receiptReader{}, errNoKey
	}
	h := sha256.Sum256([]byte(tok))
	if s.admin[h] {
		return receiptReader{all: true}, nil
	}
	k := s.keys[h]
	switch {
	case k == nil:
		return receiptReader{}, errBadKey
	case k.Role == RoleBilling:
		return receiptReader{all: true}, nil
	}
	return receiptReader{subject: k.ID}, nil
}

func (s *Server) healthz(rc *fasthttp.RequestCtx) error {
	return writeJSON(rc, map[string]string{"status": "ok"})
}

// readyz is 200 when the gateway is not draining, at least one healthy
// worker serves a model, and every Deps.Readiness check passes (a
// degraded replica, with Redis unreachable say, keeps serving but tells
// its load balancer so).
func (s *Server) readyz(rc *fasthttp.RequestCtx) error {
	switch {
	case s.draining.Load():
		return apierr.Unavailable("draining", "the gateway is shutting down", nil)
	case len(s.deps.Dispatcher.Models()) == 0:
		return apierr.Unavailable("no_workers", "no healthy worker is registered", nil)
	}
	for _, check := range s.deps.Readiness {
		if err := check(); err != nil {
			return apierr.Unavailable("not_ready", "not ready: "+err.Error(), err)
		}
	}
	return writeJSON(rc, map[string]string{"status": "ready"})
}

func (s *Server) listModels(rc *fasthttp.RequestCtx) error {
	if _, err := s.authenticate(rc); err != nil {
		return err
	}
	return writeJSON(rc, openai.NewModelList(s.deps.Dispatcher.Models(), s.clock.Now().Unix()))
}

func (s *Server) getModel(rc *fasthttp.RequestCtx, id string) error {
	if _, err := s.authenticate(rc); err != nil {
		return err
	}
	for _, m := range s.deps.Dispatcher.Models() {
		if m.Name == id {
			return writeJSON(rc, openai.NewModel(m, s.clock.Now().Unix()))
		}
	}
	return apierr.NotFound("model", "model_not_found", "The model '%s' does not exist or you do not have access to it.", id)
}

func (s *Server) listWorkers(rc *fasthttp.RequestCtx) error {
	if err := s.authenticateAdmin(rc); err != nil {
		return err
	}
	var list any = []any{}
	if s.deps.ListWorkers != nil {
		list = s.deps.ListWorkers()
	}
	return writeJSON(rc, map[string]any{"object": "list", "data": list})
}

// exportReceipts lists receipts in ledger order: every receipt for an
// admin or billing key, only its own (from the ledger's per-subject
// index, with cursors of its own) for a client key.
func (s *Server) exportReceipts(rc *fasthttp.RequestCtx) error {
	who, err := s.authenticateReceipts(rc)
	if err != nil {
		return err
	}
	if s.deps.Ledger == nil {
		return errReceiptsOff
	}
	q := rc.QueryArgs()
	after := string(q.Peek("after"))
	limit := 100
	if v := q.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 1000 {
			return apierr.BadRequest("limit", "invalid_value", "Invalid 'limit': expected an integer from 1 to 1000.")
		}
		limit = n
	}
	if len(after) > 256 {
		return apierr.BadRequest("after", "invalid_value", "Invalid 'after': cursor too long.")
	}
	ctx, cancel := opContext()
	defer cancel()
	var items []json.RawMessage
	var next string
	if who.all {
		items, next, err = s.deps.Ledger.Export(ctx, after, limit)
	} else {
		items, next, err = s.deps.Ledger.ExportOf(ctx, who.subject, after, limit)
	}
	if err != nil {
		return err
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	body := map[string]any{"object": "list", "data": items, "has_more": next != ""}
	if next != "" {
		body["next"] = next
	}
	return writeJSON(rc, body)
}

var errReceiptsOff = apierr.NotFound("", "receipts_disabled", "Receipts are not enabled on this gateway.")

// opContext bounds a short store operation made on behalf of a request.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func validPathID(id string) bool {
	return id != "" && len(id) <= 128 && ids.ValidRequestID(id) && !strings.ContainsAny(id, "/ ")
}

// getReceipt serves one receipt: any to an admin or billing key, only its
// own to a client key, which gets the same 404 for another's receipt as
// for an unknown ID (never 403: receipt IDs do not leak).
func (s *Server) getReceipt(rc *fasthttp.RequestCtx, id string) error {
	who, err := s.authenticateReceipts(rc)
	if err != nil {
		return err
	}
	if s.deps.Ledger == nil {
		return errReceiptsOff
	}
	if !validPathID(id) {
		return apierr.NotFound("id", "receipt_not_found", "No receipt with that ID.")
	}
	ctx, cancel := opContext()
	defer cancel()
	var raw json.RawMessage
	if who.all {
		raw, err = s.deps.Ledger.Receipt(ctx, id)
	} else {
		raw, err = s.deps.Ledger.ReceiptOf(ctx, who.subject, id)
	}
	if err != nil {
		return err
	}
	rc.SetContentType("application/json")
	rc.SetBody(raw)
	return nil
}

// getVerifyingKey is public: anyone may verify receipts.
func (s *Server) getVerifyingKey(rc *fasthttp.RequestCtx, id string) error {
	if s.deps.Ledger == nil {
		return errReceiptsOff
	}
	if !validPathID(id) {
		return apierr.NotFound("id", "key_not_found", "No verifying key with that ID.")
	}
	ctx, cancel := opContext()
	defer cancel()
	b, err := s.deps.Ledger.VerifyingKey(ctx, id)
	if err != nil {
		return err
	}
	rc.SetContentType("application/octet-stream")
	rc.SetBody(b)
	return nil
}

// readJSON decodes an admin or worker body strictly (unknown fields fail).
func readJSON(rc *fasthttp.RequestCtx, v any) error {
	if err := refuseEncodedBody(rc); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(rc.PostBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return apierr.BadRequest(ute.Field, "invalid_type", "Invalid type for '%s'.", ute.Field)
		}
		return apierr.BadRequest("", "invalid_json", "We could not parse the JSON body of your request: %v.", err)
	}
	return onlyOneValue(dec)
}
