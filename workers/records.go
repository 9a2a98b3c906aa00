package workers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// RecordPolicy is what the gateway holds each of a worker's completion
// records to before it becomes a receipt (ClientOptions.Records). The link
// checks every done event against the task it sent and the bytes it
// relayed (see streamValidator.checkRecord):
//
//   - request ID, subject and request digest are the task's own (a worker
//     cannot bill another customer, or describe another request);
//   - the response digest is ResponseDigest over exactly the text deltas
//     the gateway received for the task — what it relayed — or over the
//     embeddings it returns;
//   - the worker ID is the one it registered, and the model version one
//     it registered for the model the task named;
//   - the time lies within [the batch was sent − Skew, now + Skew];
//   - the token counts are within UsageBounds of the model.
//
// A record that fails any of these is refused: the link fails with a
// *RecordError (its client gets 502 worker_record_refused, nothing is
// recorded), and the scheduler ejects the worker, logging and counting
// the reason.
type RecordPolicy struct {
	// WorkerID is the worker's registered ID; "" skips the check.
	WorkerID string
	// Models are the versions the worker registered; empty skips the check.
	Models []ModelVersion
	// Clock is the gateway's clock (default clock.Real).
	Clock clock.Clock
	// Skew is how far a record's time may lie outside the batch's span
	// (default DefaultRecordSkew).
	Skew time.Duration
	// Bounds gives a model's usage bounds (nil: DefaultUsageBounds for
	// every model).
	Bounds func(model string) UsageBounds
}

// DefaultRecordSkew is the clock difference allowed between a worker and
// the gateway.
const DefaultRecordSkew = 30 * time.Second

// UsageBounds bound a record's token counts by what the gateway can see
// without the model's tokenizer. Completion tokens are at most max_tokens
// and at most
//
//	CompletionPerByte × (bytes of the text relayed + bytes of the longest stop string) + CompletionSlack
//
// — byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece with byte
// fallback (Llama 2, the built-in engine's models) never make more tokens
// than bytes, so a factor of 1 holds, and the slack covers the tokens
// that leave no text (end of sequence, a first token's stripped space, a
// stop string cut from the text). Prompt tokens are at most
//
//	PromptPerByte × bytes of the prompt (message contents and names, or the inputs) + PromptPerMessage × messages (or inputs) + PromptSlack
//
// — the chat template's markers per message, and its fixed part (BOS, the
// assistant's header, a default system prompt). The zero value of a field
// takes DefaultUsageBounds'.
type UsageBounds struct {
	CompletionPerByte float64 `yaml:"completion_tokens_per_byte" json:"completion_tokens_per_byte"`
	CompletionSlack   int     `yaml:"completion_slack" json:"completion_slack"`
	PromptPerByte     float64 `yaml:"prompt_tokens_per_byte" json:"prompt_tokens_per_byte"`
	PromptPerMessage  int     `yaml:"prompt_tokens_per_message" json:"prompt_tokens_per_message"`
	PromptSlack       int     `yaml:"prompt_slack" json:"prompt_slack"`
	// HiddenCompletion marks a model that spends completion tokens on text
	// it does not return (a reasoning model behind a reasoning parser):
	// only max_tokens then bounds its completion tokens.
	HiddenCompletion bool `yaml:"hidden_completion" json:"hidden_completion"`
}

// DefaultUsageBounds suit the built-in engine (SentencePiece, byte
// fallback), the simulator (at least one byte a token) and the common
// byte-level BPE models behind vLLM, SGLang or llama.cpp: one token a
// byte, 16 tokens of slack on completions, and 8 per message plus 64 on
// prompts (ChatML and Llama 3 spend 5 per message; a template's default
// system prompt some 20–30).
var DefaultUsageBounds = UsageBounds{CompletionPerByte: 1, CompletionSlack: 16, PromptPerByte: 1, PromptPerMessage: 8, PromptSlack: 64}

// WithDefaults fills b's zero fields from DefaultUsageBounds.
func (b UsageBounds) WithDefaults() UsageBounds {
	d := DefaultUsageBounds
	if b.CompletionPerByte == 0 {
		b.CompletionPerByte = d.CompletionPerByte
	}
	if b.CompletionSlack == 0 {
		b.CompletionSlack = d.CompletionSlack
	}
	if b.PromptPerByte == 0 {
		b.PromptPerByte = d.PromptPerByte
	}
	if b.PromptPerMessage == 0 {
		b.PromptPerMessage = d.PromptPerMessage
	}
	if b.PromptSlack == 0 {
		b.PromptSlack = d.PromptSlack
	}
	return b
}

// Validate names a bad field.
func (b UsageBounds) Validate() error {
	switch {
	case b.CompletionPerByte < 0 || b.CompletionPerByte > 64 || math.IsNaN(b.CompletionPerByte):
		return fmt.Errorf("completion_tokens_per_byte: %v is outside [0, 64]", b.CompletionPerByte)
	case b.PromptPerByte < 0 || b.PromptPerByte > 64 || math.IsNaN(b.PromptPerByte):
		return fmt.Errorf("prompt_tokens_per_byte: %v is outside [0, 64]", b.PromptPerByte)
	case b.CompletionSlack < 0 || b.CompletionSlack > 1<<20:
		return fmt.Errorf("completion_slack: %d is outside [0, 1048576]", b.CompletionSlack)
	case b.PromptPerMessage < 0 || b.PromptPerMessage > 1<<20:
		return fmt.Errorf("prompt_tokens_per_message: %d is outside [0, 1048576]", b.PromptPerMessage)
	case b.PromptSlack < 0 || b.PromptSlack > 1<<20:
		return fmt.Errorf("prompt_slack: %d is outside [0, 1048576]", b.PromptSlack)
	}
	return nil
}

// MaxPromptTokens is the most prompt tokens a record of t may claim.
func (b UsageBounds) MaxPromptTokens(t *Task) int {
	b = b.WithDefaults()
	bytes, parts := len(t.Prompt), 1
	switch t.Kind {
	case KindChat:
		bytes, parts = 0, len(t.Messages)
		for _, m := range t.Messages {
			bytes += len(m.Content) + len(m.Name)
		}
	case KindEmbedding:
		bytes, parts = 0, len(t.Inputs)
		for _, in := range t.Inputs {
			bytes += len(in)
		}
	}
	return int(math.Ceil(b.PromptPerByte*float64(bytes))) + b.PromptPerMessage*parts + b.PromptSlack
}

// MaxCompletionTokens is the most completion tokens a record of t may
// claim for textBytes of text relayed; -1 means unbounded but for
// max_tokens.
func (b UsageBounds) MaxCompletionTokens(t *Task, textBytes int) int {
	b = b.WithDefaults()
	limit := -1
	if !b.HiddenCompletion {
		stop := 0
		for _, s := range t.Stop {
			stop = max(stop, len(s))
		}
		limit = int(math.Ceil(b.CompletionPerByte*float64(textBytes+stop))) + b.CompletionSlack
	}
	if t.MaxTokens > 0 && (limit < 0 || t.MaxTokens < limit) {
		limit = t.MaxTokens
	}
	return limit
}

// Checks a record can fail (RecordError.Check; the refusal metric's label).
const (
	CheckRequest      = "request"         // request ID or request digest is not the task's
	CheckSubject      = "subject"         // another customer
	CheckResponse     = "response_digest" // not the bytes relayed
	CheckWorker       = "worker"          // another worker's ID
	CheckModel        = "model"           // a version the worker did not register for the model
	CheckTime         = "time"            // outside the batch's span
	CheckPrompt       = "prompt_tokens"   // above the bound from the prompt
	CheckCompletion   = "completion_tokens"
	CheckFinishReason = "finish_reason"
)

// RecordError is a completion record the gateway refused.
type RecordError struct {
	Index  int    // the task's index in its batch
	Check  string // which check failed (Check*)
	Detail string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("task %d: completion record refused (%s): %s", e.Index, e.Check, e.Detail)
}

// relayed accumulates what the gateway received for one task: the digest
// and length of its text.
type relayed struct {
	h     hash.Hash
	bytes int
	buf   [128]byte // the text is copied here to be hashed: a []byte(text) conversion would allocate per delta
}

func (r *relayed) add(text string) {
	if r.h == nil {
		r.h = sha256.New()
	}
	r.bytes += len(text)
	for len(text) > 0 {
		n := copy(r.buf[:], text)
		r.h.Write(r.buf[:n])
		text = text[n:]
	}
}

func (r *relayed) digest() string {
	if r.h == nil {
		d := sha256.Sum256(nil)
		return hex.EncodeToString(d[:])
	}
	return hex.EncodeToString(r.h.Sum(nil))
}

// checkRecord holds the done event of task i to the policy (see
// RecordPolicy); sent is when the batch went out.
func (p *RecordPolicy) checkRecord(i int, t *Task, ev *Event, text *relayed, sent time.Time) error {
	c := ev.Completion
	refuse := func(check, format string, args ...any) error {
		return &RecordError{Index: i, Check: check, Detail: fmt.Sprintf(format, args...)}
	}
	if c.RequestID != t.RequestID {
		return refuse(CheckRequest, "names request %q, the task is %q", c.RequestID, t.RequestID)
	}
	if d := t.Digest(); c.RequestDigest != hex.EncodeToString(d[:]) {
		return refuse(CheckRequest, "request digest %s is not the task's %x", c.RequestDigest, d)
	}
	if c.Subject != t.Subject {
		return refuse(CheckSubject, "bills %q for a request of %q", c.Subject, t.Subject)
	}
	var want string
	if t.Kind == KindEmbedding {
		d := ResponseDigest("", ev.Embeddings)
		want = hex.EncodeToString(d[:])
	} else {
		want = text.digest()
	}
	if c.ResponseDigest != want {
		return refuse(CheckResponse, "response digest %s, the %d bytes relayed hash to %s", c.ResponseDigest, text.bytes, want)
	}
	if p.WorkerID != "" && !strings.EqualFold(c.WorkerID, p.WorkerID) {
		return refuse(CheckWorker, "worker %q, registered as %q", c.WorkerID, p.WorkerID)
	}
	if len(p.Models) > 0 {
		ok := c.Model == t.Model
		if ok {
			ok = false
			for _, mv := range p.Models {
				ok = ok || mv.Name == c.Model && strings.EqualFold(mv.Digest, c.ModelDigest)
			}
		}
		if !ok {
			return refuse(CheckModel, "model %q version %s: not one the worker registered for %q", c.Model, c.ModelDigest, t.Model)
		}
	}
	now := p.clock().Now()
	if c.Time.Before(sent.Add(-p.skew())) || c.Time.After(now.Add(p.skew())) {
		return refuse(CheckTime, "time %s outside [%s, %s] ± %s", c.Time.UTC().Format(time.RFC3339Nano),
			sent.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), p.skew())
	}
	if c.FinishReason != "" && c.FinishReason != ev.FinishReason {
		return refuse(CheckFinishReason, "record says %q, the event %q", c.FinishReason, ev.FinishReason)
	}
	b := p.bounds(c.Model)
	if n := b.MaxPromptTokens(t); c.PromptTokens > n {
		return refuse(CheckPrompt, "%d prompt tokens for a prompt bounded at %d", c.PromptTokens, n)
	}
	if t.Kind == KindEmbedding {
		if c.CompletionTokens != 0 {
			return refuse(CheckCompletion, "%d completion tokens for embeddings", c.CompletionTokens)
		}
		return nil
	}
	if n := b.MaxCompletionTokens(t, text.bytes); n >= 0 && c.CompletionTokens > n {
		return refuse(CheckCompletion, "%d completion tokens for %d bytes relayed (bounded at %d)", c.CompletionTokens, text.bytes, n)
	}
	return nil
}

func (p *RecordPolicy) clock() clock.Clock {
	if p.Clock == nil {
		return clock.Real{}
	}
	return p.Clock
}

func (p *RecordPolicy) skew() time.Duration {
	if p.Skew <= 0 {
		return DefaultRecordSkew
	}
	return p.Skew
}

func (p *RecordPolicy) bounds(model string) UsageBounds {
	if p.Bounds == nil {
		return DefaultUsageBounds
	}
	return p.Bounds(model)
}
