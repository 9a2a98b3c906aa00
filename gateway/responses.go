package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/responses"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/valyala/fasthttp"
)

// ResponseStore keeps Responses API responses for GET, DELETE and
// previous_response_id, each under the owner (responseOwner) of the key
// that created it. Satisfied by internal/responses' BoltStore (embedded)
// and RedisStore (cluster mode). Optional: nil stores nothing (every
// response answers store: false).
type ResponseStore interface {
	Put(ctx context.Context, r *responses.Stored) error
	// Get returns owner's response id; an unknown ID, another owner's and
	// an expired one all give the same apierr 404 (naming param).
	Get(ctx context.Context, owner, id, param string) (*responses.Stored, error)
	// Delete removes owner's response id, with Get's 404 otherwise.
	Delete(ctx context.Context, owner, id string) error
}

// responseOwner is the owner a key's stored responses are filed under: a
// digest of the key's own digest (the one authentication looks up), so a
// leaked store names no value that authenticates.
func responseOwner(rc *fasthttp.RequestCtx) string {
	tok, _ := bearer(rc)
	d := sha256.Sum256([]byte(tok))
	o := sha256.Sum256(append([]byte("tollgate responses owner\x00"), d[:]...))
	return hex.EncodeToString(o[:])
}

// responsesAnswer renders one Responses API request through the chat
// inference path (infer.go): the builder turns the task's events into the
// response and its stream events; finish stores the response.
type responsesAnswer struct {
	s     *Server
	owner string
	conv  []responses.Item // what the response ran on, stored with it
	// inputStart is where the request's own input starts in conv.
	inputStart int
	store      bool
	build      *responses.Builder
}

// createResponse serves POST /v1/responses: the body becomes a chat task
// (after the stored conversation of previous_response_id, if any) that
// runs exactly as a chat completion — the same admission, limits,
// scheduler, receipts and usage accounting.
func (s *Server) createResponse(rc *fasthttp.RequestCtx, reqID string, req *obs.Request) error {
	key, err := s.authenticate(rc)
	if err != nil {
		return err
	}
	body, err := s.requestBody(rc)
	if err != nil {
		return err
	}
	r, err := responses.Parse(body, s.cfg.Limits)
	if err != nil {
		return err
	}
	owner := responseOwner(rc)
	var history []responses.Item
	if r.PreviousResponseID != "" {
		if s.deps.Responses == nil {
			return responses.NotFound("previous_response_id", r.PreviousResponseID)
		}
		ctx, cancel := opContext()
		prev, err := s.deps.Responses.Get(ctx, owner, r.PreviousResponseID, "previous_response_id")
		cancel()
		if err != nil {
			return err
		}
		history = prev.History()
	}
	conv := r.Conversation(history)
	if max := maxMessages(s.cfg.Limits.MaxMessages); len(conv) > max {
		return apierr.BadRequest("input", "invalid_value", "Invalid 'input': the conversation has %d items with the previous response's; at most %d are allowed.", len(conv), max)
	}
	t, err := r.Task(s.taskRequestID(rc, reqID), conv)
	if err != nil {
		return err
	}
	t.Subject = key.ID
	if err := s.checkCapabilities(t); err != nil {
		return err
	}
	if s.deps.Responses == nil {
		r.Store = false // nothing keeps it: say so in the response
	}
	inf := s.newInference(key, t, "resp_")
	req.SetOperation(obs.OpChat, t.Model, inf.reqID)
	inf.stream = r.Stream
	inf.answer = &responsesAnswer{s: s, owner: owner, conv: conv, inputStart: len(history), store: r.Store,
		build: responses.NewBuilder(responses.NewResponse(r, inf.respID, inf.created))}
	return s.run(rc, inf, req)
}

func maxMessages(configured int) int {
	if configured > 0 {
		return configured
	}
	return 4096
}

// finish completes the response from the task's done event and stores it
// (before the client sees it complete, so a GET right after finds it). A
// store that fails is logged: the answer was served and billed, and the
// client still gets it.
func (a *responsesAnswer) finish(ctx context.Context, done *task.Event) []responses.Event {
	evs := a.build.Done(finishReason(done), done.Usage)
	if !a.store {
		return evs
	}
	resp := a.build.Response()
	st := &responses.Stored{Owner: a.owner, Conversation: a.conv, Response: resp, InputStart: a.inputStart} // the store stamps Created
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.s.deps.Responses.Put(sctx, st); err != nil {
		level := "response not stored: GET and previous_response_id will not find it"
		if errors.Is(err, responses.ErrTooLarge) {
			a.s.log.WarnContext(ctx, level, "response", resp.ID, "err", err)
		} else {
			a.s.log.ErrorContext(ctx, level, "response", resp.ID, "err", err)
		}
	}
	return evs
}

// unary writes the finished response as one JSON body.
func (a *responsesAnswer) unary(ctx context.Context, rc *fasthttp.RequestCtx, done *task.Event) error {
	a.finish(ctx, done)
	return writeJSON(rc, a.build.Response())
}

// events writes Responses API server-sent events ("event:" and "data:"
// lines).
func (sw *sseWriter) events(evs []responses.Event) error {
	for _, e := range evs {
		sw.w.WriteString("event: ")
		sw.w.WriteString(e.Type)
		sw.w.WriteString("\ndata: ")
		sw.w.Write(e.Data)
		if _, err := sw.w.WriteString("\n\n"); err != nil {
			return errClientGone
		}
	}
	return nil
}

// responseRoute serves GET and DELETE /v1/responses/{id} to the key that
// created the response; any other key gets the 404 of an unknown ID.
func (s *Server) responseRoute(rc *fasthttp.RequestCtx, id string) error {
	get, del := rc.IsGet() || rc.IsHead(), rc.IsDelete()
	if !get && !del {
		return errMethod
	}
	if _, err := s.authenticate(rc); err != nil {
		return err
	}
	id, sub, _ := strings.Cut(id, "/")
	if sub != "" && (sub != "input_items" || !get) {
		return apierr.NotFound("", "unknown_url", "Unknown request URL: %s %s.", rc.Method(), rc.Path())
	}
	if !validPathID(id) || !strings.HasPrefix(id, "resp_") || s.deps.Responses == nil {
		return responses.NotFound("", id)
	}
	owner := responseOwner(rc)
	ctx, cancel := opContext()
	defer cancel()
	if del {
		if err := s.deps.Responses.Delete(ctx, owner, id); err != nil {
			return err
		}
		return writeJSON(rc, map[string]any{"id": id, "object": "response", "deleted": true})
	}
	st, err := s.deps.Responses.Get(ctx, owner, id, "")
	if err != nil {
		return err
	}
	if sub == "input_items" {
		return writeInputItems(rc, st)
	}
	return writeJSON(rc, st.Response)
}

// writeInputItems serves GET /v1/responses/{id}/input_items as OpenAI
// pages it: limit 1–100 (default 20), order desc (default) or asc, after
// an item ID.
func writeInputItems(rc *fasthttp.RequestCtx, st *responses.Stored) error {
	q := rc.QueryArgs()
	limit := 20
	if v := q.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > 100 {
			return apierr.BadRequest("limit", "invalid_value", "Invalid 'limit': expected an integer from 1 to 100.")
		}
		limit = n
	}
	items := st.InputItems()
	switch order := string(q.Peek("order")); order {
	case "", "desc":
		slices.Reverse(items)
	case "asc":
	default:
		return apierr.BadRequest("order", "invalid_value", "Invalid value for 'order': '%s'. Supported values are: 'asc' and 'desc'.", truncateID(order))
	}
	if after := string(q.Peek("after")); after != "" {
		i := slices.IndexFunc(items, func(m map[string]any) bool { return m["id"] == after })
		if i < 0 {
			return apierr.BadRequest("after", "invalid_value", "Invalid 'after': no input item '%s' in this response.", truncateID(after))
		}
		items = items[i+1:]
	}
	more := len(items) > limit
	items = items[:min(limit, len(items))]
	body := map[string]any{"object": "list", "data": items, "has_more": more, "first_id": nil, "last_id": nil}
	if len(items) > 0 {
		body["first_id"], body["last_id"] = items[0]["id"], items[len(items)-1]["id"]
	}
	return writeJSON(rc, body)
}

func truncateID(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
