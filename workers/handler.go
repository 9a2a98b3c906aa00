package workers

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Worker link routes, served by the worker and called by the gateway's Client.
const (
	PathBatch  = "/v1/worker/batch"
	PathCancel = "/v1/worker/cancel"
)

// ContentTypeNDJSON is the media type of the event stream.
const ContentTypeNDJSON = "application/x-ndjson"

// DefaultMaxBatchBytes bounds a batch request body.
const DefaultMaxBatchBytes = 32 << 20

// CancelRequest is the body of POST /v1/worker/cancel.
type CancelRequest struct {
	BatchID string `json:"batch_id"`
	Index   int    `json:"index"`
}

// HandlerOption adjusts NewHandler.
type HandlerOption func(*handlerConfig)

type handlerConfig struct {
	maxBody int64
	routes  map[string]http.Handler
	token   func() string
}

// WithLinkAuth makes the batch and cancel routes require
// "Authorization: Bearer <token>" where token is what current returns (for a
// registered worker, Registerer.SessionToken, which the gateway also holds as
// Registered.SessionToken and passes as ClientOptions.Token). An empty
// current token refuses everything. Extra routes are not covered.
func WithLinkAuth(current func() string) HandlerOption {
	return func(c *handlerConfig) { c.token = current }
}

// WithMaxBatchBytes sets the largest batch body accepted (default 32 MiB).
func WithMaxBatchBytes(n int64) HandlerOption {
	return func(c *handlerConfig) { c.maxBody = n }
}

// WithRoute serves an extra route beside the batch and cancel routes, e.g.
// "POST /v1/worker/countersign" or "GET /metrics". pattern is a
// net/http ServeMux pattern.
func WithRoute(pattern string, h http.Handler) HandlerOption {
	return func(c *handlerConfig) { c.routes[pattern] = h }
}

// NewHandler serves the agent over the gateway↔worker link:
//
//	POST /v1/worker/batch   body: Batch JSON; response: NDJSON stream of
//	                        Event, one per line; a streamed task's events are
//	                        flushed whenever no further event is ready (see
//	                        eventWriter). A client
//	                        disconnect cancels the whole batch. Refusals before
//	                        the first event come back as an OpenAI error body
//	                        with their status (400 invalid, 503 draining).
//	POST /v1/worker/cancel  body: {"batch_id","index"}; 204.
func NewHandler(a *Agent, logger *slog.Logger, opts ...HandlerOption) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := handlerConfig{maxBody: DefaultMaxBatchBytes, routes: map[string]http.Handler{}}
	for _, o := range opts {
		o(&cfg)
	}
	h := &handler{agent: a, logger: logger, maxBody: cfg.maxBody, token: cfg.token}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathBatch, h.authed(h.batch))
	mux.HandleFunc("POST "+PathCancel, h.authed(h.cancel))
	for p, r := range cfg.routes {
		mux.Handle(p, r)
	}
	return routeErrors{mux}
}

// routeErrors answers what the mux does not route (an unknown path, a known
// path with another method) in the same OpenAI error form as every other
// refusal, instead of net/http's plain-text 404 and 405.
type routeErrors struct{ mux *http.ServeMux }

// probeMethods are tried, only on the error path, to fill Allow.
var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

func (re routeErrors) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := re.mux.Handler(r); pattern != "" {
		re.mux.ServeHTTP(w, r)
		return
	}
	var allow []string
	for _, m := range probeMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := re.mux.Handler(probe); pattern != "" && m != r.Method {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		WriteError(w, apierr.NotFound("", "not_found", "no route for %s %s", r.Method, r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	WriteError(w, &apierr.Error{Status: http.StatusMethodNotAllowed, Type: apierr.TypeInvalidRequest, Code: "method_not_allowed",
		Message: fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
}

type handler struct {
	agent   *Agent
	logger  *slog.Logger
	maxBody int64
	token   func() string
}

// authed checks the link's bearer token when WithLinkAuth is set.
func (h *handler) authed(next http.HandlerFunc) http.HandlerFunc {
	if h.token == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		want := h.token()
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			WriteError(w, apierr.Unauthorized("invalid_link_token", "the worker link token is missing or wrong"))
			return
		}
		next(w, r)
	}
}

func (h *handler) batch(w http.ResponseWriter, r *http.Request) {
	// The server span continues the gateway's client span; each task's
	// span follows its own Traceparent (see Agent.RunBatch).
	ctx, span := h.agent.obs.StartHTTP(r.Context(), r, PathBatch)
	defer span.End()
	var b task.Batch
	// Unknown fields are ignored here (not refused) so that a gateway one
	// version ahead, whose Task carries a new optional field, still works.
	if err := decodeJSONLenient(w, r, h.maxBody, &b); err != nil {
		span.SetError(err)
		WriteError(w, err)
		return
	}
	span.SetString("tollgate.batch.id", b.ID)
	span.SetInt("tollgate.batch.size", len(b.Tasks))
	// A failed write means the gateway is gone: the emitting task gets the
	// error and RunBatch cancels the whole batch at once.
	ew := newEventWriter(w, len(b.Tasks))
	err := h.agent.RunBatch(ctx, &b, ew.emit)
	werr := ew.close()
	if err == nil {
		err = werr
	}
	span.SetError(err)
	if err != nil && !ew.hasStarted() {
		WriteError(w, err)
		return
	}
	if err != nil {
		h.logger.Info("batch stream ended early", "batch", b.ID, "err", err)
	}
}

func (h *handler) cancel(w http.ResponseWriter, r *http.Request) {
	var req CancelRequest
	if err := decodeJSON(w, r, 4096, &req); err != nil {
		WriteError(w, err)
		return
	}
	if req.BatchID == "" || len(req.BatchID) > MaxBatchIDLen || req.Index < 0 || req.Index >= MaxBatchTasks {
		WriteError(w, apierr.BadRequest("batch_id", "invalid_cancel", "batch_id must be 1..%d bytes and index in [0, %d)", MaxBatchIDLen, MaxBatchTasks))
		return
	}
	h.agent.Cancel(req.BatchID, req.Index)
	w.WriteHeader(http.StatusNoContent)
}

// decodeJSON reads one JSON value of at most limit bytes, refusing unknown
// fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeBody(w, r, limit, v, true)
}

// decodeJSONLenient is decodeJSON ignoring unknown fields.
func decodeJSONLenient(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeBody(w, r, limit, v, false)
}

func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, strict bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apierr.TooLarge(int(limit))
		}
		return apierr.BadRequest("", "invalid_json", "malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return apierr.BadRequest("", "invalid_json", "trailing data after the JSON body")
	}
	return nil
}

// ErrorBody reads the OpenAI error envelope that the worker link and the
// registration routes answer with. The HTTP status is the error's status;
// Error.Status is only set by an older worker that also sent it in the body.
type ErrorBody struct {
	Error task.EventError `json:"error"`
}

// openAIError is what WriteError writes: exactly OpenAI's
// {"error":{"message","type","param","code"}}, param and code null when empty.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// WriteError renders err as an OpenAI error body with its status.
func WriteError(w http.ResponseWriter, err error) {
	e := apierr.From(err)
	w.Header().Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	var body openAIError
	body.Error.Message, body.Error.Type = e.Message, e.Type
	if e.Param != "" {
		body.Error.Param = &e.Param
	}
	if e.Code != "" {
		body.Error.Code = &e.Code
	}
	json.NewEncoder(w).Encode(body)
}
