package gateway

import (
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/valyala/fasthttp"
)

// Auditor is told of each recorded completion, after the fact, so that it
// may re-execute a sample on another worker (package audit). Observe must
// not block: it runs on the request's goroutine after the receipt is
// durable.
type Auditor interface {
	Observe(receiptID string, t *task.Task, budget time.Duration, c *task.Completion, finish, text string, hasText bool)
}

// observeAudit hands a finished request to the auditor when its key allows
// audits (APIKey.Audit: its prompt may be re-sent to another provider).
func (s *Server) observeAudit(inf *inference, done *task.Event) {
	if s.deps.Auditor == nil || !inf.key.Audit || done.Completion == nil {
		return
	}
	s.deps.Auditor.Observe(inf.receiptID, inf.task, inf.budget, done.Completion, finishReason(done), inf.text, inf.hasText)
}

// listDisputes serves GET /v1/admin/disputes: the audits' disputes with
// their evidence, oldest first.
func (s *Server) listDisputes(rc *fasthttp.RequestCtx) error {
	if err := s.authenticateAdmin(rc); err != nil {
		return err
	}
	var list any = []any{}
	if s.deps.Disputes != nil {
		l, err := s.deps.Disputes(rc)
		if err != nil {
			s.log.Warn("disputes: shared log unreachable, listing this replica's", "err", err)
			return writeJSON(rc, map[string]any{"object": "list", "data": l, "partial": true})
		}
		list = l
	}
	return writeJSON(rc, map[string]any{"object": "list", "data": list})
}
