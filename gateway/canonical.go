package gateway

import (
	"encoding/json"
	"math"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/openai"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// parsed is an OpenAI request body decoded by a route: its canonical task
// and how the answer travels.
type parsed struct {
	task         *task.Task
	stream       bool
	includeUsage bool
	format       string // embeddings encoding_format
}

// parseRequest decodes and validates an OpenAI body of kind and maps it to
// the task the worker runs — the one decode path, shared by the routes and
// by RequestTask, so a receipt's request digest (task.Task.Digest) can
// be recomputed from the client's own body. Subject is the key's ID.
func parseRequest(kind task.Kind, body []byte, lim openai.Limits, requestID, subject string) (*parsed, error) {
	var p parsed
	switch kind {
	case task.KindChat:
		r, err := openai.ParseChat(body, lim)
		if err != nil {
			return nil, err
		}
		p.task, p.stream, p.includeUsage = r.Task(requestID), r.Stream, r.IncludeUsage()
	case task.KindCompletion:
		r, err := openai.ParseCompletion(body, lim)
		if err != nil {
			return nil, err
		}
		p.task, p.stream, p.includeUsage = r.Task(requestID), r.Stream, r.IncludeUsage()
	default:
		r, err := openai.ParseEmbedding(body, lim)
		if err != nil {
			return nil, err
		}
		p.task, p.format = r.Task(requestID), r.EncodingFormat
	}
	p.task.Subject = subject
	return &p, nil
}

// RequestTask maps a client's own OpenAI request body to the canonical task
// the gateway built from it (task.Task, whose Digest is a receipt's
// request_digest), given the receipt's request ID and subject. The kind is
// the body's: "messages" is /v1/chat/completions, "prompt"
// /v1/completions, "input" /v1/embeddings. Limits are not applied (the
// gateway checked its own): any body the gateway accepted maps.
// docs/receipts.md describes the canonical form.
func RequestTask(body []byte, requestID, subject string) (*task.Task, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, apierr.BadRequest("", "invalid_json", "the request body is not a JSON object: %v", err)
	}
	kind := task.KindEmbedding
	switch {
	case probe["messages"] != nil:
		kind = task.KindChat
	case probe["prompt"] != nil:
		kind = task.KindCompletion
	case probe["input"] == nil:
		return nil, apierr.BadRequest("", "unknown_request", "the body has none of messages, prompt or input")
	}
	p, err := parseRequest(kind, body, unlimited, requestID, subject)
	if err != nil {
		return nil, err
	}
	return p.task, nil
}

// unlimited are limits no accepted request exceeds.
var unlimited = openai.Limits{MaxTokens: math.MaxInt32, MaxMessages: math.MaxInt32, MaxInputs: math.MaxInt32}
