package workers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
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
	Models []task.ModelVersion
	// Clock is the gateway's clock (default clock.Real).
	Clock clock.Clock
	// Skew is how far a record's time may lie outside the batch's span
	// (default DefaultRecordSkew).
	Skew time.Duration
	// Bounds gives a model's usage bounds (nil: DefaultUsageBounds for
	// every model).
	Bounds func(model string) task.UsageBounds
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
	rich  *task.Output // a rich task's (task.RichOutput) choices and tool calls
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

// addRich relays one delta of a rich task: its text and tool-call pieces
// per choice, held to task.Output's order and bounds.
func (r *relayed) addRich(t *task.Task, ev *task.Event) error {
	if r.rich == nil {
		r.rich = task.NewOutput(t.Choices())
	}
	for i := range ev.ToolCalls {
		if d := &ev.ToolCalls[i]; d.ID != "" {
			if err := t.CheckToolCall(d.Name); err != nil {
				return err
			}
		}
	}
	before := r.rich.Bytes()
	if err := r.rich.Add(ev.Choice, ev.Text, ev.ToolCalls); err != nil {
		return err
	}
	r.bytes += r.rich.Bytes() - before
	return nil
}

func (r *relayed) digest() string {
	if r.rich != nil {
		d := r.rich.Digest()
		return hex.EncodeToString(d[:])
	}
	if r.h == nil {
		d := sha256.Sum256(nil)
		return hex.EncodeToString(d[:])
	}
	return hex.EncodeToString(r.h.Sum(nil))
}

// checkRecord holds the done event of task i to the policy (see
// RecordPolicy); sent is when the batch went out.
func (p *RecordPolicy) checkRecord(i int, t *task.Task, ev *task.Event, text *relayed, sent time.Time) error {
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
	if t.Kind == task.KindEmbedding {
		d := task.ResponseDigest("", ev.Embeddings)
		want = hex.EncodeToString(d[:])
	} else if t.RichOutput() && text.rich == nil {
		d := task.NewOutput(t.Choices()).Digest() // nothing relayed
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
	if t.Kind == task.KindEmbedding {
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
		return task.DefaultRecordSkew
	}
	return p.Skew
}

func (p *RecordPolicy) bounds(model string) task.UsageBounds {
	if p.Bounds == nil {
		return task.DefaultUsageBounds
	}
	return p.Bounds(model)
}
