package scheduler

// The scheduling cycle: filter, score and pick a worker for a request, and
// the estimates (prompt and output tokens, affinity key) it uses.

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// timingSample is how often a cycle is timed step by step: reading the
// clock costs about as much as a step, so 1 cycle in timingSample is.
const timingSample = 16

// cycleLocked runs filters → scorers → picker and admission for req.
func (s *Scheduler) cycleLocked(req *Request) (*Candidate, error) {
	s.stats.cycles++
	timed := s.stats.cycles%timingSample == 1
	var start, t time.Time // decision latency is CPU time, not scheduling time
	if timed {
		start = time.Now()
	}
	step := func(i int) {
		if timed {
			now := time.Now()
			s.stats.steps[i].ObserveDuration(now.Sub(t))
			t = now
		}
	}
	t = start
	req.Now = s.clock.Now()
	req.nowNs = monoNanos(req.Now)
	sc := &s.scratch
	cands := append(sc.cands[:0], s.order...)
	for i, f := range s.filters {
		cands = f.Filter(req, cands)
		step(i)
		if len(cands) == 0 {
			sc.cands = cands
			s.stats.refused[i]++
			return nil, s.emptyError(i, req)
		}
	}
	sc.cands = cands
	n := len(cands)
	s.stats.candidates.Observe(float64(n))
	s.metrics.RecordCandidates(context.Background(), n)
	if cap(sc.pred) < n {
		sc.pred = make([]float64, n)
		sc.scores = make([]float64, n)
		sc.totals = make([]float64, n)
	}
	pred, scores, totals := sc.pred[:n], sc.scores[:n], sc.totals[:n]
	best := 0.0
	for i, c := range cands {
		pred[i] = predictTTFT(c, req.PromptTokens)
		if i == 0 || pred[i] < best {
			best = pred[i]
		}
		totals[i] = 0
	}
	req.predTTFT = pred
	for j, sc := range s.scorers {
		sc.Score(req, cands, scores)
		for i := range totals {
			totals[i] += s.weights[j] * clamp01(scores[i])
		}
		step(len(s.filters) + j)
	}
	pick := s.picker.Pick(req, cands, totals)
	step(len(s.stats.steps) - 1)
	req.predTTFT = nil
	observe := func() {
		if timed {
			d := time.Since(start)
			s.stats.decisions.ObserveDuration(d)
			s.metrics.RecordDecision(context.Background(), d)
		}
	}

	if !req.Task.Deadline.IsZero() && !req.Now.Before(req.Task.Deadline) {
		s.stats.expired++
		return nil, apierr.Timeout(CodeDeadlineExceeded, "the request's deadline passed before it could start", nil)
	}
	if s.shed && !req.Task.Deadline.IsZero() {
		slack := req.Task.Deadline.Sub(req.Now).Seconds()
		if best > slack && req.Task.Priority == task.PriorityInteractive && !mayExceedContext(req, cands) {
			s.stats.shed++
			observe()
			retry := time.Duration(max(best-slack, 1) * float64(time.Second))
			return nil, apierr.RateLimited(CodeDeadlineUnmeetable,
				fmt.Sprintf("no worker can start this request within its deadline (predicted %.0f ms, %.0f ms left); retry later", best*1e3, slack*1e3), retry)
		}
	}
	s.stats.placed++
	observe()
	return cands[pick], nil
}

func (s *Scheduler) emptyError(filter int, req *Request) error {
	switch s.filters[filter].(type) {
	case *ModelFilter:
		if req.Task.Kind == task.KindEmbedding {
			return apierr.NotFound("model", CodeModelNotFound, "no worker serves embeddings with the model %q", req.Task.Model)
		}
		return apierr.NotFound("model", CodeModelNotFound, "the model %q does not exist or no worker serves it", req.Task.Model)
	case *CapacityFilter:
		return apierr.RateLimited(CodeOverloaded, "every worker serving this model is at capacity; retry later", time.Second)
	}
	return apierr.Unavailable(CodeNoHealthyWorker, "no healthy worker serves this model right now; retry later", nil)
}

// estimatePromptTokens is the gateway's hint, or about four bytes a token.
func estimatePromptTokens(t *task.Task) int {
	if t.PromptTokensHint > 0 {
		return t.PromptTokensHint
	}
	n := len(t.Prompt)
	for _, m := range t.Messages {
		n += len(m.Content) + 4
	}
	for _, in := range t.Inputs {
		n += len(in)
	}
	return max(n/4, 1)
}

func (s *Scheduler) estimateOutputTokens(t *task.Task) int {
	switch {
	case t.Kind == task.KindEmbedding:
		return 0
	case t.MaxTokens > 0:
		return min(t.MaxTokens, s.cfg.ExpectedOutputTokens*4)
	}
	return s.cfg.ExpectedOutputTokens
}

// affinityKey hashes the model and the start of the prompt (the first
// messages of a chat), so conversations and shared system prompts meet
// the same engine prefix cache.
func (s *Scheduler) affinityKey(t *task.Task) uint64 {
	if t.Kind == task.KindEmbedding {
		return 0
	}
	h := newFNV()
	h.writeString(t.Model)
	left := s.cfg.AffinityPrefix
	write := func(str string) {
		if left <= 0 {
			return
		}
		if len(str) > left {
			str = str[:left]
		}
		h.writeString(str)
		h.writeString("\x00")
		left -= len(str)
	}
	write(t.Prompt)
	for _, m := range t.Messages {
		write(m.Role)
		write(m.Content)
	}
	return mix64(uint64(h)) | 1 // never 0, which means no key
}
