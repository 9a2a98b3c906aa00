// Package task is the contract between the gateway, the scheduler, the
// batcher, the ledger and the workers: tasks, batches, events, completion
// records, model versions, engines and their telemetry, registration records
// and the validators every side applies to them. It is a leaf: it imports
// nothing of Tollgate's but apierr, so every package can share these types
// without importing the worker implementation.
package task

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// Kind is what a task asks of an engine.
type Kind string

const (
	KindChat       Kind = "chat"
	KindCompletion Kind = "completion"
	KindEmbedding  Kind = "embedding"
)

// Priority classes for admission and batching.
type Priority int

const (
	PriorityInteractive Priority = 0
	PriorityBatch       Priority = 1
)

// Message is one chat message, already validated by the gateway.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	Name    string `json:"name,omitempty"`

	// Parts is the content as the client sent it when that was an array
	// of parts (text, image_url, input_audio), compacted JSON; Content then
	// holds the concatenated text parts. Engines that speak OpenAI send
	// Parts; the built-in engine reads Content.
	Parts json.RawMessage `json:"parts,omitempty"`
	// ToolCalls are the calls an assistant message of the history made.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID names the call a "tool" message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
}

// Task is one validated request as the worker runs it. The gateway builds it
// from the OpenAI body; engines never see HTTP or OpenAI wire types.
type Task struct {
	RequestID string    `json:"request_id"`
	Kind      Kind      `json:"kind"`
	Model     string    `json:"model"`              // model name as the client asked for it
	Messages  []Message `json:"messages,omitempty"` // KindChat
	Prompt    string    `json:"prompt,omitempty"`   // KindCompletion
	Inputs    []string  `json:"inputs,omitempty"`   // KindEmbedding
	// Dimensions (KindEmbedding) asks for vectors of this length (models
	// trained for shortened embeddings); 0: the model's own.
	Dimensions int `json:"dimensions,omitempty"`

	MaxTokens   int      `json:"max_tokens,omitempty"` // 0: until EOS or context end
	Temperature float64  `json:"temperature"`          // 0: greedy
	TopP        float64  `json:"top_p,omitempty"`      // 0 or 1: off
	Seed        *int64   `json:"seed,omitempty"`
	Stop        []string `json:"stop,omitempty"`

	// The richer request (rich.go); zero values mean "not asked".
	Tools             []Tool          `json:"tools,omitempty"`
	ToolChoice        *ToolChoice     `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *ResponseFormat `json:"response_format,omitempty"`
	Logprobs          bool            `json:"logprobs,omitempty"`
	TopLogprobs       int             `json:"top_logprobs,omitempty"`
	// N is the number of choices asked for; 0 and 1 both mean one.
	N int `json:"n,omitempty"`

	// Subject is the API key ID the request was made with (for receipts).
	Subject string `json:"subject,omitempty"`
	// Deadline is when the client stops caring; zero means none.
	Deadline time.Time `json:"deadline,omitempty"`
	Priority Priority  `json:"priority,omitempty"`
	// PromptTokensHint is the gateway's estimate of prompt tokens, for scheduling.
	PromptTokensHint int `json:"prompt_tokens_hint,omitempty"`
	// Stream is true when the client reads the answer as it is produced
	// (SSE). A task that is not streamed gets its text in one delta just
	// before its done event, and engines may ask their upstream for the
	// whole answer at once. Not part of Digest: it changes how the text
	// travels, not what it is.
	Stream bool `json:"stream,omitempty"`
	// Traceparent is the W3C traceparent of the request's dispatch span, so
	// the worker's spans join the request's trace (a batch mixes traces, so
	// the link request's own headers cannot carry it). Not part of Digest.
	Traceparent string `json:"traceparent,omitempty"`
}

// Digest is the SHA-256 of the task's canonical content: everything that
// determines the output, nothing about routing (deadline, priority, hints).
// The gateway and the worker compute it the same way, so a worker can check
// that a receipt names a request it really ran.
func (t *Task) Digest() [32]byte {
	canon := struct {
		RequestID   string    `json:"request_id"`
		Kind        Kind      `json:"kind"`
		Model       string    `json:"model"`
		Messages    []Message `json:"messages"`
		Prompt      string    `json:"prompt"`
		Inputs      []string  `json:"inputs"`
		MaxTokens   int       `json:"max_tokens"`
		Temperature float64   `json:"temperature"`
		TopP        float64   `json:"top_p"`
		Seed        *int64    `json:"seed"`
		Stop        []string  `json:"stop"`
		Subject     string    `json:"subject"`
		// The richer request is omitted when not asked, so a plain task's
		// digest is what it was before these fields existed.
		Tools             []Tool          `json:"tools,omitempty"`
		ToolChoice        *ToolChoice     `json:"tool_choice,omitempty"`
		ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
		ResponseFormat    *ResponseFormat `json:"response_format,omitempty"`
		Logprobs          bool            `json:"logprobs,omitempty"`
		TopLogprobs       int             `json:"top_logprobs,omitempty"`
		N                 int             `json:"n,omitempty"`
		Dimensions        int             `json:"dimensions,omitempty"`
	}{t.RequestID, t.Kind, t.Model, t.Messages, t.Prompt, t.Inputs, t.MaxTokens, t.Temperature, t.TopP, t.Seed, t.Stop, t.Subject,
		t.Tools, t.ToolChoice, t.ParallelToolCalls, t.ResponseFormat, t.Logprobs, t.TopLogprobs, t.N, t.Dimensions}
	b, err := json.Marshal(canon) // struct order is fixed; cannot fail on these types
	if err != nil {
		panic(err)
	}
	return sha256.Sum256(b)
}

// Batch is one frame from the gateway to a worker: tasks that run together.
type Batch struct {
	ID    string `json:"id"`
	Tasks []Task `json:"tasks"`
}

// EventType tags an Event.
type EventType string

const (
	EventDelta  EventType = "delta" // generated text
	EventDone   EventType = "done"  // the task finished; carries usage and the completion record
	EventFailed EventType = "error" // the task failed; carries Error
)

// Event is streamed back from the worker, tagged with its task's index in the batch.
type Event struct {
	Index int       `json:"i"`
	Type  EventType `json:"t"`

	Text   string `json:"text,omitempty"`   // EventDelta
	Tokens int    `json:"tokens,omitempty"` // EventDelta: completion tokens in Text
	// ToolCalls (EventDelta) are pieces of the tool calls being generated.
	ToolCalls []ToolCallDelta `json:"tool_calls,omitempty"`
	// Logprobs (EventDelta) is the upstream's logprobs object for the
	// tokens of this delta, compacted JSON, when the task asked for them.
	Logprobs json.RawMessage `json:"logprobs,omitempty"`
	// Choice (EventDelta) is the choice this delta belongs to when the task
	// asked for several (Task.N); 0 otherwise.
	Choice int `json:"choice,omitempty"`

	// FinishReason (EventDone) is "stop" or "length" for a generation that
	// ran to its end, or "cancelled" or "error" for one that ended early
	// with tokens already generated (see FinishCancelled): its Usage and
	// Completion then count only those tokens, and Error says why it ended.
	FinishReason string      `json:"finish_reason,omitempty"`
	Usage        *Usage      `json:"usage,omitempty"`      // EventDone
	Embeddings   [][]float32 `json:"embeddings,omitempty"` // EventDone, KindEmbedding: one per input
	Completion   *Completion `json:"completion,omitempty"` // EventDone

	Error *EventError `json:"error,omitempty"` // EventFailed; EventDone that ended early

	// More (never on the wire): what follows this delta is at hand (a
	// streamed delta's Delta.More, or an unstreamed task's text, which its
	// done event follows), so the worker's event writer may hold it for
	// that event.
	More bool `json:"-"`
}

// EventError is an engine failure in OpenAI terms (see internal/apierr).
type EventError struct {
	Status  int    `json:"status"`
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Param   string `json:"param,omitempty"`
	Message string `json:"message"`
}

// Usage counts tokens as the engine's tokenizer counts them.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// Completion is the worker's record of a finished request: what becomes a
// receipt leaf. Digests are lowercase hex SHA-256.
type Completion struct {
	RequestID        string    `json:"request_id"`
	WorkerID         string    `json:"worker_id"`
	Model            string    `json:"model"`
	ModelDigest      string    `json:"model_digest"`    // weights manifest of the version that ran
	RequestDigest    string    `json:"request_digest"`  // Task.Digest()
	ResponseDigest   string    `json:"response_digest"` // ResponseDigest of the output
	Subject          string    `json:"subject,omitempty"`
	PromptTokens     int       `json:"prompt_tokens"`
	CompletionTokens int       `json:"completion_tokens"`
	Time             time.Time `json:"time"`
	// FinishReason is how the generation ended (Event.FinishReason; "stop"
	// for embeddings). It is not part of the receipt leaf: the tokens are
	// what is proven, the reason tells a reader why there are so few.
	FinishReason string `json:"finish_reason,omitempty"`
}

// Finish reasons of a completion record beyond OpenAI's "stop" and
// "length": the generation ended early and the record counts the tokens
// generated until then (see docs/billing.md).
const (
	// FinishCancelled: the task was stopped before it finished — its
	// client went away, or its deadline passed.
	FinishCancelled = "cancelled"
	// FinishError: the engine (or its upstream) failed after the client
	// had received tokens of a streamed answer.
	FinishError = "error"
)

// EndedEarly reports whether a finish reason says the generation was cut
// short (FinishCancelled or FinishError).
func EndedEarly(finishReason string) bool {
	return finishReason == FinishCancelled || finishReason == FinishError
}

// Void is the gateway's record of a receipt ID it handed to a client (in
// a stream's headers) for a request that then served nothing billable:
// the ID resolves to a receipt with status "void" and this reason, and
// never to a billable leaf.
type Void struct {
	RequestID string `json:"request_id"`
	// RequestDigest is the digest of the task the gateway sent
	// (Task.Digest), so the client can tell the receipt is its own.
	RequestDigest string    `json:"request_digest"`
	Subject       string    `json:"subject"`
	Model         string    `json:"model"`
	Time          time.Time `json:"time"`
	Reason        string    `json:"reason"`
}

// ResponseDigest is the SHA-256 of a task's output: the generated text for
// chat and completions, or the little-endian float32 bytes of each embedding
// in order for embeddings (see EmbeddingBytes).
func ResponseDigest(text string, embeddings [][]float32) [32]byte {
	if embeddings == nil {
		return sha256.Sum256([]byte(text))
	}
	return sha256.Sum256(EmbeddingBytes(embeddings))
}

// EmbeddingBytes concatenates the vectors as little-endian float32.
func EmbeddingBytes(embeddings [][]float32) []byte {
	n := 0
	for _, e := range embeddings {
		n += 4 * len(e)
	}
	out := make([]byte, 0, n)
	for _, e := range embeddings {
		for _, f := range e {
			u := math.Float32bits(f)
			out = append(out, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
		}
	}
	return out
}

// ModelVersion is a model name plus the SHA-256 manifest of its weights.
type ModelVersion struct {
	Name          string `json:"name"`
	Digest        string `json:"digest"` // lowercase hex SHA-256 of the weights manifest
	ContextLength int    `json:"context_length,omitempty"`
	Embeddings    bool   `json:"embeddings,omitempty"` // serves /v1/embeddings
	OwnedBy       string `json:"owned_by,omitempty"`
	// Determinism is what the engine promises about repeating a task (see
	// DeterminismExact); the auditor picks its comparison from it. Not
	// part of the signed registration: a worker that understates it only
	// gets a looser test, one that overstates it is caught sooner.
	Determinism string `json:"determinism,omitempty"`
	// Capabilities are what the model serves beyond plain text (rich.go).
	// Part of the signed registration.
	Capabilities []Capability `json:"capabilities,omitempty"`
}

// Determinism declarations of a model version.
const (
	// DeterminismNone (empty) promises nothing beyond what greedy decoding
	// gives on the engine: batched GPU kernels may change a late token.
	DeterminismNone = ""
	// DeterminismExact promises that the same task (greedy, or sampled
	// with a seed) gives the same bytes on every run and every worker with
	// the same weights, whatever else runs in the batch. The built-in
	// llama engine makes it.
	DeterminismExact = "exact"
)

// Delta is generated text handed by an engine to the agent as it is produced.
type Delta struct {
	Text      string
	Tokens    int
	ToolCalls []ToolCallDelta
	Logprobs  json.RawMessage
	Choice    int
	// More: the engine already holds its next delta or its end (they came
	// in together), so the worker may send this one with it instead of on
	// its own. Never set it when what follows may take time.
	More bool
}

// Result is how a generation ended.
type Result struct {
	FinishReason     string // "stop", "length" or "tool_calls"
	PromptTokens     int
	CompletionTokens int
}

// EmbedResult is one engine call's embeddings.
type EmbedResult struct {
	Vectors      [][]float32
	PromptTokens int
	// InputTokens optionally counts tokens per input (same order as the
	// inputs). The agent merges the embedding tasks of a batch into one
	// call and uses it to give each task its exact prompt tokens; without it
	// the total is split in proportion to input bytes.
	InputTokens []int
}

// Engine runs tasks. Implementations: workers/engine/sim (simulator),
// workers/engine/llama (built-in CPU engine), workers/engine/openai (any
// OpenAI-compatible upstream). Errors should be *apierr.Error where the
// client should see a specific status.
type Engine interface {
	// Models lists the model versions the engine serves.
	Models() []ModelVersion
	// Generate runs a chat or completion task, calling emit with each piece
	// of text as it is produced. It stops early when ctx is done or emit
	// returns an error. With an error it may still return the usage of the
	// work done until then (its prompt tokens, when known), which the
	// agent records for a task that ended early (see FinishCancelled).
	Generate(ctx context.Context, t *Task, emit func(Delta) error) (Result, error)
	// Embed embeds all inputs in one engine call.
	Embed(ctx context.Context, model string, inputs []string) (EmbedResult, error)
}

// LoadReporter is implemented by engines that know their own load (for
// example by scraping vLLM's /metrics); the agent sends it with heartbeats.
type LoadReporter interface {
	Load(ctx context.Context) (Load, error)
}

// Load is an engine's own view of its queue and cache.
type Load struct {
	Waiting      int     `json:"waiting"`
	Running      int     `json:"running"`
	KVCacheUsage float64 `json:"kv_cache_usage"` // 0..1
	Source       string  `json:"source,omitempty"`
	// Unknown names the fields the engine could not read ("waiting",
	// "running", "kv_cache_usage"): their zero means "not reported", not
	// "idle" (a llama.cpp build without the KV-cache gauge, say).
	Unknown []string `json:"unknown,omitempty"`
}

// GPU is one device's telemetry, as read through NVML.
type GPU struct {
	Index          int     `json:"index"`
	Name           string  `json:"name"`
	UUID           string  `json:"uuid"`
	MemoryTotalMiB uint64  `json:"memory_total_mib"`
	MemoryUsedMiB  uint64  `json:"memory_used_mib"`
	MemoryFreeMiB  uint64  `json:"memory_free_mib"`
	GPUUtilPct     uint32  `json:"gpu_util_pct"`
	MemUtilPct     uint32  `json:"mem_util_pct"`
	TemperatureC   uint32  `json:"temperature_c"`
	PowerW         float64 `json:"power_w"`
	SMClockMHz     uint32  `json:"sm_clock_mhz"`
	MemClockMHz    uint32  `json:"mem_clock_mhz"`
	MIGEnabled     bool    `json:"mig_enabled"`
	EnergyMJ       uint64  `json:"energy_mj"` // total energy since driver load, millijoules
}

// Heartbeat is what a worker reports at least once a second.
type Heartbeat struct {
	WorkerID string    `json:"worker_id"`
	Time     time.Time `json:"time"`
	GPUs     []GPU     `json:"gpus"`
	Load     Load      `json:"load"`
	InFlight int       `json:"in_flight"`
	Draining bool      `json:"draining,omitempty"`
}

// APIError turns a failed task's event error back into the error type every
// layer returns.
func (e *EventError) APIError() *apierr.Error {
	status := e.Status
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	return &apierr.Error{Status: status, Type: e.Type, Code: e.Code, Param: e.Param, Message: e.Message}
}
