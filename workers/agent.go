package workers

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Limits on a batch as the agent accepts it. The gateway never sends more;
// they bound what a misbehaving peer can make the worker hold.
const (
	MaxBatchTasks     = 1024
	MaxBatchIDLen     = 128
	MaxRequestIDLen   = 256
	MaxTraceparentLen = 256 // W3C version 00 is 55 bytes; later versions may append fields
	MaxEmbedInputs    = 2048
)

// CodeWorkerDraining is the error code a draining worker answers new work with.
const CodeWorkerDraining = "worker_draining"

// CodeCancelled marks a task that ended because it was cancelled.
const CodeCancelled = "cancelled"

// StatusClientClosed is the status of a task cancelled before it finished
// (nginx's 499, "client closed request"); it is never shown to a client,
// whose connection is already gone.
const StatusClientClosed = 499

// AgentConfig configures a worker agent.
type AgentConfig struct {
	// WorkerID is receipts.WorkerID of the worker's public key; it goes into
	// every Completion.
	WorkerID string
	// Engine runs the tasks.
	Engine task.Engine
	// MaxConcurrency bounds the tasks running at once on the engine; tasks
	// beyond it wait in order. 0 means 64.
	MaxConcurrency int
	Logger         *slog.Logger
	Clock          clock.Clock
	// RecordMaxAge and RecordMaxBytes bound the completion records kept for
	// later countersigning (0: DefaultRecordMaxAge, DefaultRecordMaxBytes);
	// the oldest age out first, logged and counted.
	RecordMaxAge   time.Duration
	RecordMaxBytes int64
	// DataDir, when set, makes the completion records and the countersigned
	// batches survive a restart (DataDir/records.db; a completion is
	// returned once its record is fdatasync'd to the write-ahead log beside
	// it, records.db-wal). Without it they live only as long as the
	// process.
	DataDir string
	// Obs traces each task (a "worker.task" span continuing Task.Traceparent,
	// the engine call a child span) and the batch endpoint. nil: off.
	Obs *obs.Provider
}

// Agent runs batches of tasks on an engine. It is the worker's core and knows
// nothing of HTTP; Handler serves it over the gateway↔worker link.
type Agent struct {
	workerID string
	engine   task.Engine
	logger   *slog.Logger
	clock    clock.Clock
	slots    chan struct{}
	obs      *obs.Provider
	produced *recordStore

	mu       sync.Mutex
	draining bool
	inFlight int
	idle     chan struct{} // closed when inFlight drops to 0 while draining
	cancels  map[taskKey]context.CancelFunc
}

type taskKey struct {
	batch string
	index int
}

// NewAgent builds an agent. A failure to open DataDir's record store is
// logged, not fatal: the agent then keeps its records in memory only. A
// worker process uses OpenAgent, which fails instead.
func NewAgent(cfg AgentConfig) *Agent {
	a, err := OpenAgent(cfg)
	if err != nil {
		a.logger.Error("completion records not durable: the record store did not open", "err", err)
		a.produced, _ = openRecordStore(recordOptions{maxAge: cfg.RecordMaxAge, maxBytes: cfg.RecordMaxBytes,
			clock: a.clock, logger: a.logger, metrics: cfg.Obs.Metrics()})
	}
	return a
}

// OpenAgent builds an agent over its record store (DataDir/records.db, or
// a temporary one without DataDir); it fails if the store cannot be opened
// (for example, another worker holds it).
func OpenAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = 64
	}
	a := &Agent{
		workerID: cfg.WorkerID,
		engine:   cfg.Engine,
		logger:   cfg.Logger.With("worker", cfg.WorkerID),
		clock:    cfg.Clock,
		obs:      cfg.Obs,
		slots:    make(chan struct{}, cfg.MaxConcurrency),
		cancels:  map[taskKey]context.CancelFunc{},
	}
	p, err := openRecordStore(recordOptions{dir: cfg.DataDir, maxAge: cfg.RecordMaxAge, maxBytes: cfg.RecordMaxBytes,
		clock: cfg.Clock, logger: a.logger, metrics: cfg.Obs.Metrics()})
	a.produced = p
	return a, err
}

// WorkerID is the ID the agent stamps on its completions.
func (a *Agent) WorkerID() string { return a.workerID }

// Models is what the agent's engine serves.
func (a *Agent) Models() []task.ModelVersion { return a.engine.Models() }

// MaxConcurrency is how many tasks the agent runs at once.
func (a *Agent) MaxConcurrency() int { return cap(a.slots) }

// Engine is the engine the agent runs on (for load reporting).
func (a *Agent) Engine() task.Engine { return a.engine }

// InFlight is the number of tasks accepted and not yet ended.
func (a *Agent) InFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inFlight
}

// Draining reports whether Drain was called.
func (a *Agent) Draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// Produced returns the completion record the agent produced for requestID,
// if it still holds it. The receipts countersign check uses it.
func (a *Agent) Produced(requestID string) (*task.Completion, bool) {
	return a.produced.get(requestID)
}

// Drain stops the agent taking new batches (they get 503 worker_draining) and
// waits until every task in flight has ended or ctx is done.
func (a *Agent) Drain(ctx context.Context) error {
	a.mu.Lock()
	a.draining = true
	if a.idle == nil {
		a.idle = make(chan struct{})
		if a.inFlight == 0 {
			close(a.idle)
		}
	}
	idle := a.idle
	a.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain: %d tasks still in flight: %w", a.InFlight(), ctx.Err())
	}
}

// Cancel stops one task of a running batch. A generation that had
// produced tokens then ends with a done event, finish reason
// FinishCancelled, whose record counts the tokens generated until then;
// one that had not, and an embedding task, with EventFailed (code
// "cancelled"). Unknown batches or indexes are ignored: the task may
// already have ended.
func (a *Agent) Cancel(batchID string, index int) {
	a.mu.Lock()
	cancel := a.cancels[taskKey{batchID, index}]
	a.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// ValidateBatch checks a batch from outside before any of it runs.
func (a *Agent) ValidateBatch(b *task.Batch) error {
	if b == nil {
		return apierr.BadRequest("", "invalid_batch", "empty batch")
	}
	if b.ID == "" || len(b.ID) > MaxBatchIDLen {
		return apierr.BadRequest("id", "invalid_batch", "batch id must be 1..%d bytes", MaxBatchIDLen)
	}
	if len(b.Tasks) == 0 || len(b.Tasks) > MaxBatchTasks {
		return apierr.BadRequest("tasks", "invalid_batch", "a batch carries 1..%d tasks, got %d", MaxBatchTasks, len(b.Tasks))
	}
	for i := range b.Tasks {
		if err := validateTask(&b.Tasks[i]); err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
	}
	return nil
}

func validateTask(t *task.Task) error {
	switch {
	case t.RequestID == "" || len(t.RequestID) > MaxRequestIDLen:
		return apierr.BadRequest("request_id", "invalid_batch", "request_id must be 1..%d bytes", MaxRequestIDLen)
	case t.Model == "" || len(t.Model) > task.MaxModelNameLen:
		return apierr.BadRequest("model", "invalid_batch", "model must be 1..%d bytes", task.MaxModelNameLen)
	case t.MaxTokens < 0:
		return apierr.BadRequest("max_tokens", "invalid_batch", "max_tokens must not be negative")
	case len(t.Traceparent) > MaxTraceparentLen:
		return apierr.BadRequest("traceparent", "invalid_batch", "traceparent must be at most %d bytes", MaxTraceparentLen)
	case t.Temperature < 0 || t.Temperature > 2:
		return apierr.BadRequest("temperature", "invalid_batch", "temperature must be in [0, 2]")
	case t.TopP < 0 || t.TopP > 1:
		return apierr.BadRequest("top_p", "invalid_batch", "top_p must be in [0, 1]")
	}
	switch t.Kind {
	case task.KindChat:
		if len(t.Messages) == 0 {
			return apierr.BadRequest("messages", "invalid_batch", "a chat task needs messages")
		}
	case task.KindCompletion:
	case task.KindEmbedding:
		if len(t.Inputs) == 0 || len(t.Inputs) > MaxEmbedInputs {
			return apierr.BadRequest("input", "invalid_batch", "an embedding task needs 1..%d inputs", MaxEmbedInputs)
		}
	default:
		return apierr.BadRequest("kind", "invalid_batch", "unknown task kind %q", t.Kind)
	}
	return nil
}

// RunBatch runs every task of b concurrently (at most MaxConcurrency at once)
// and emits its events tagged with the task's index. Each task ends with
// exactly one EventDone or one EventFailed. Calls to emit are serialized. If
// emit returns an error (the gateway went away) the whole batch is cancelled
// and RunBatch returns that error once every task has stopped. A batch that
// is invalid, or arrives while draining, is refused before any event.
func (a *Agent) RunBatch(ctx context.Context, b *task.Batch, emit func(task.Event) error) error {
	if err := a.ValidateBatch(b); err != nil {
		return err
	}
	keys, err := a.admit(b)
	if err != nil {
		return err
	}
	ctx, cancelBatch := context.WithCancel(ctx)
	defer cancelBatch()

	out := &emitter{emit: emit, cancel: cancelBatch}
	served := a.engine.Models() // a few entries: scanned, not indexed

	var wg sync.WaitGroup
	type embedKey struct {
		model      string
		dimensions int
	}
	embedGroups := map[embedKey][]int{} // model and vector length -> task indexes
	embedCtx := make([]context.Context, len(b.Tasks))
	var embedCancels []context.CancelFunc
	defer func() {
		for _, c := range embedCancels {
			c()
		}
	}()
	var last func() // the latest generation task, not yet started
	for i := range b.Tasks {
		t := &b.Tasks[i]
		tctx, cancel := a.taskContext(ctx, keys[i], t)
		mv, ok := findModel(served, t.Model)
		if !ok {
			cancel()
			a.finish(keys[i])
			out.send(task.Event{Index: i, Type: task.EventFailed, Error: eventError(apierr.NotFound("model", "model_not_found", "model %q is not served by this worker", t.Model))})
			continue
		}
		if t.Kind == task.KindEmbedding {
			k := embedKey{t.Model, t.Dimensions}
			embedGroups[k] = append(embedGroups[k], i)
			embedCtx[i] = tctx
			embedCancels = append(embedCancels, cancel)
			continue
		}
		run := func() {
			defer a.finish(keys[i])
			defer cancel()
			a.runGenerate(tctx, i, t, mv, out)
		}
		if last != nil {
			wg.Add(1)
			go func(f func()) { defer wg.Done(); f() }(last)
		}
		last = run
	}
	for k, idx := range embedGroups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mv, _ := findModel(served, k.model)
			a.runEmbedGroup(ctx, b, keys, embedCtx, idx, mv, k.dimensions, out)
		}()
	}
	// The last generation task runs on this goroutine, which would only
	// wait otherwise: a batch of one task costs no goroutine hand-off.
	if last != nil {
		last()
	}
	wg.Wait()
	return out.err()
}

// admit registers the batch's tasks as in flight, or refuses while draining.
func (a *Agent) admit(b *task.Batch) ([]taskKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining {
		return nil, apierr.Unavailable(CodeWorkerDraining, "the worker is draining", nil)
	}
	keys := make([]taskKey, len(b.Tasks))
	for i := range b.Tasks {
		k := taskKey{b.ID, i}
		if _, dup := a.cancels[k]; dup {
			return nil, apierr.BadRequest("id", "invalid_batch", "batch %q is already running", b.ID)
		}
		keys[i] = k
	}
	for _, k := range keys {
		a.cancels[k] = func() {}
	}
	a.inFlight += len(keys)
	return keys, nil
}

// taskContext derives a task's context: cancellable by Cancel, and ended at
// the task's deadline as the agent's clock sees it.
func (a *Agent) taskContext(ctx context.Context, k taskKey, t *task.Task) (context.Context, context.CancelFunc) {
	tctx, cancel := context.WithCancelCause(ctx)
	stop := func() {}
	if !t.Deadline.IsZero() {
		if !t.Deadline.After(a.clock.Now()) {
			cancel(context.DeadlineExceeded)
		}
		timer := a.clock.AfterFunc(t.Deadline.Sub(a.clock.Now()), func() { cancel(context.DeadlineExceeded) })
		stop = func() { timer.Stop() }
	}
	a.mu.Lock()
	a.cancels[k] = func() { cancel(errCancelled) }
	a.mu.Unlock()
	return tctx, func() { stop(); cancel(nil) }
}

var errCancelled = errors.New("task cancelled")

// finish marks one task ended.
func (a *Agent) finish(k taskKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cancels[k]; !ok {
		return
	}
	delete(a.cancels, k)
	a.inFlight--
	if a.inFlight == 0 && a.idle != nil {
		select {
		case <-a.idle:
		default:
			close(a.idle)
		}
	}
}

func (a *Agent) acquire(ctx context.Context) error {
	select {
	case a.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (a *Agent) release() { <-a.slots }

func (a *Agent) runGenerate(ctx context.Context, i int, t *task.Task, mv task.ModelVersion, out *emitter) {
	// A malformed or missing traceparent parents the span on the batch's.
	ctx, span := a.obs.StartFromTraceparent(ctx, t.Traceparent, "worker.task", obs.KindInternal)
	defer span.End()
	span.SetRequest(t.RequestID, genAIOperation(t.Kind), t.Model)
	span.SetInt("tollgate.task.index", i)
	if err := a.acquire(ctx); err != nil {
		span.SetError(err)
		out.send(task.Event{Index: i, Type: task.EventFailed, Error: taskError(ctx, err)})
		return
	}
	defer a.release()

	// A streamed task sends each delta as it comes; one that is not keeps
	// them and sends the whole text in one delta before its done event
	// (same bytes, same token count, one event instead of one per token).
	//
	// A rich task (tools, several choices) or one asking for logprobs
	// sends every delta as it comes, streamed or not: its pieces (tool
	// calls, choices, logprobs) do not merge into one text. A rich task's
	// output is kept whole for its response digest (task.Output).
	var text strings.Builder
	held := 0 // tokens in text not yet sent (unstreamed tasks)
	sent := 0 // tokens sent in deltas (streamed tasks)
	var rich *task.Output
	if t.RichOutput() {
		rich = task.NewOutput(t.Choices())
	}
	passThrough := rich != nil || t.Logprobs
	ectx, espan := a.obs.Start(ctx, "engine.generate", obs.KindInternal)
	res, err := a.engine.Generate(ectx, t, func(d task.Delta) error {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if d.Tokens < 0 {
			return fmt.Errorf("engine emitted a delta with %d tokens", d.Tokens)
		}
		if passThrough {
			if rich != nil {
				if err := rich.Add(d.Choice, d.Text, d.ToolCalls); err != nil {
					return fmt.Errorf("engine emitted a bad delta: %w", err)
				}
			} else if d.Choice != 0 || len(d.ToolCalls) > 0 {
				return fmt.Errorf("engine emitted tool calls or choice %d for a task without tools or n", d.Choice)
			}
			if d.Text == "" && d.Tokens == 0 && len(d.ToolCalls) == 0 && d.Logprobs == nil {
				return nil
			}
			text.WriteString(d.Text)
			if err := out.send(task.Event{Index: i, Type: task.EventDelta, Text: d.Text, Tokens: d.Tokens,
				ToolCalls: d.ToolCalls, Logprobs: d.Logprobs, Choice: d.Choice, More: d.More}); err != nil {
				return err
			}
			sent += d.Tokens
			return nil
		}
		if d.Choice != 0 || len(d.ToolCalls) > 0 {
			return fmt.Errorf("engine emitted tool calls or choice %d for a task without tools or n", d.Choice)
		}
		if d.Text == "" && d.Tokens == 0 {
			return nil
		}
		text.WriteString(d.Text)
		if !t.Stream {
			held += d.Tokens
			return nil
		}
		if err := out.send(task.Event{Index: i, Type: task.EventDelta, Text: d.Text, Tokens: d.Tokens, More: d.More}); err != nil {
			return err
		}
		sent += d.Tokens
		return nil
	})
	espan.SetError(err)
	espan.End()
	if err == nil && (res.PromptTokens < 0 || res.CompletionTokens < 0) {
		err = fmt.Errorf("engine reported negative usage %+v", res)
	}
	if err != nil {
		span.SetError(err)
		a.logger.Info("task failed", "request_id", t.RequestID, "model", t.Model, "tokens", held+sent, "err", err)
		a.endEarly(ctx, i, t, mv, out, err, res, text.String(), rich, held, sent)
		return
	}
	if !t.Stream && !passThrough && (text.Len() > 0 || held > 0) {
		// More: its done event follows at once, and goes in the same write.
		if err := out.send(task.Event{Index: i, Type: task.EventDelta, Text: text.String(), Tokens: held, More: true}); err != nil {
			span.SetError(err)
			return
		}
	}
	digest := task.ResponseDigest(text.String(), nil)
	if rich != nil {
		digest = rich.Digest()
	}
	// The link carries "stop" and "length" for a generation that ran to
	// its end, and "tool_calls" for a task with tools that called them; an
	// engine's other reasons (an upstream's "content_filter", say) end the
	// text too.
	finish := res.FinishReason
	if finish != "length" && (finish != task.FinishToolCalls || len(t.Tools) == 0) {
		finish = "stop"
	}
	c := a.completion(t, mv, digest, res.PromptTokens, res.CompletionTokens, finish)
	span.SetUsage(res.PromptTokens, res.CompletionTokens)
	out.send(task.Event{Index: i, Type: task.EventDone, FinishReason: finish,
		Usage:      &task.Usage{PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens},
		Completion: c})
}

// endEarly ends a generation task that failed or was stopped. When tokens
// were already generated and they are billable — the task was cancelled
// (its client went away, or its deadline passed), or it is streamed and
// its client already received them — it ends with a done event whose
// record counts exactly those tokens (and, for an unstreamed task, the
// text they make, sent first so the gateway sees the bytes the digest
// covers), finish reason FinishCancelled or FinishError, and the error
// that ended it. Otherwise it fails with no record: nothing billable was
// served (see docs/billing.md).
func (a *Agent) endEarly(ctx context.Context, i int, t *task.Task, mv task.ModelVersion, out *emitter, err error, res task.Result, text string, rich *task.Output, held, sent int) {
	cancelled := ctx.Err() != nil
	tokens := held + sent
	if tokens == 0 || (!cancelled && !t.Stream) {
		out.send(task.Event{Index: i, Type: task.EventFailed, Error: taskError(ctx, err)})
		return
	}
	finish := task.FinishError
	if cancelled {
		finish = task.FinishCancelled
	}
	if !t.Stream && held > 0 {
		if out.send(task.Event{Index: i, Type: task.EventDelta, Text: text, Tokens: held, More: true}) != nil {
			return
		}
	}
	prompt := max(res.PromptTokens, 0)
	digest := task.ResponseDigest(text, nil)
	if rich != nil {
		digest = rich.Digest()
	}
	c := a.completion(t, mv, digest, prompt, tokens, finish)
	out.send(task.Event{Index: i, Type: task.EventDone, FinishReason: finish,
		Usage:      &task.Usage{PromptTokens: prompt, CompletionTokens: tokens},
		Completion: c, Error: taskError(ctx, err)})
}

// genAIOperation is the GenAI operation name (gen_ai.operation.name) of a
// task kind.
func genAIOperation(k task.Kind) string {
	switch k {
	case task.KindChat:
		return obs.OpChat
	case task.KindEmbedding:
		return obs.OpEmbeddings
	}
	return obs.OpTextCompletion
}

// DimensionsEmbedder is an engine that can embed into vectors of a
// requested length (the OpenAI engine passes dimensions to its upstream).
// A task asking for dimensions reaches only a worker whose model declares
// task.CapDimensions; an engine without this method refuses it.
type DimensionsEmbedder interface {
	EmbedDimensions(ctx context.Context, model string, inputs []string, dimensions int) (task.EmbedResult, error)
}

// runEmbedGroup embeds every input of every embedding task for one model
// (and vector length) in ONE engine call and splits the vectors back per
// task.
// The call runs under the batch's context; a task cancelled or past its
// deadline meanwhile ends with EventFailed instead of its vectors.
func (a *Agent) runEmbedGroup(ctx context.Context, b *task.Batch, keys []taskKey, taskCtx []context.Context, idx []int, mv task.ModelVersion, dimensions int, out *emitter) {
	defer func() {
		for _, i := range idx {
			a.finish(keys[i])
		}
	}()
	fail := func(err error) {
		for _, i := range idx {
			out.send(task.Event{Index: i, Type: task.EventFailed, Error: taskError(ctx, err)})
		}
	}
	if err := a.acquire(ctx); err != nil {
		fail(err)
		return
	}
	defer a.release()

	var inputs []string
	var counts, byteLens []int
	for _, i := range idx {
		inputs = append(inputs, b.Tasks[i].Inputs...)
		n := 0
		for _, in := range b.Tasks[i].Inputs {
			n += len(in)
		}
		counts = append(counts, len(b.Tasks[i].Inputs))
		byteLens = append(byteLens, n)
	}
	// One engine call serves the group's tasks: its span joins the first
	// task's trace and carries the group's size.
	ectx, espan := a.obs.StartFromTraceparent(ctx, b.Tasks[idx[0]].Traceparent, "engine.embed", obs.KindInternal)
	espan.SetInt("tollgate.batch.size", len(idx))
	espan.SetInt("tollgate.embed.inputs", len(inputs))
	var res task.EmbedResult
	var err error
	if dimensions > 0 {
		de, ok := a.engine.(DimensionsEmbedder)
		if !ok || !mv.Has(task.CapDimensions) {
			err = apierr.BadRequest("dimensions", "unsupported_parameter", "Model '%s' does not support 'dimensions'.", mv.Name)
		} else {
			res, err = de.EmbedDimensions(ectx, mv.Name, inputs, dimensions)
		}
	} else {
		res, err = a.engine.Embed(ectx, mv.Name, inputs)
	}
	if err == nil {
		err = checkEmbedResult(res, len(inputs))
	}

	espan.SetError(err)
	espan.End()
	if err != nil {
		a.logger.Info("embedding failed", "model", mv.Name, "tasks", len(idx), "err", err)
		fail(err)
		return
	}
	tokens := splitTokens(res, counts, byteLens)
	off := 0
	for j, i := range idx {
		t := &b.Tasks[i]
		n := len(t.Inputs)
		vecs := res.Vectors[off : off+n : off+n]
		off += n
		if err := context.Cause(taskCtx[i]); err != nil {
			out.send(task.Event{Index: i, Type: task.EventFailed, Error: taskError(taskCtx[i], err)})
			continue
		}
		digest := task.ResponseDigest("", vecs)
		c := a.completion(t, mv, digest, tokens[j], 0, "stop")
		out.send(task.Event{Index: i, Type: task.EventDone, FinishReason: "stop",
			Usage:      &task.Usage{PromptTokens: tokens[j]},
			Embeddings: vecs, Completion: c})
	}
}

// checkEmbedResult refuses engine output the link cannot carry honestly:
// a wrong vector count, negative token counts, or non-finite values (which
// JSON cannot encode).
func checkEmbedResult(res task.EmbedResult, inputs int) error {
	if len(res.Vectors) != inputs {
		return fmt.Errorf("engine returned %d vectors for %d inputs", len(res.Vectors), inputs)
	}
	if res.PromptTokens < 0 {
		return fmt.Errorf("engine reported %d prompt tokens", res.PromptTokens)
	}
	for _, n := range res.InputTokens {
		if n < 0 {
			return fmt.Errorf("engine reported %d tokens for an input", n)
		}
	}
	for _, v := range res.Vectors {
		for _, f := range v {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return errors.New("engine returned a non-finite embedding value")
			}
		}
	}
	return nil
}

// splitTokens gives each task of a merged embedding call its prompt tokens:
// the engine's per-input counts (EmbedResult.InputTokens) when it reports
// them, else the total split in proportion to each task's input bytes
// (largest remainder, so the parts add up to the total exactly).
func splitTokens(res task.EmbedResult, inputsPerTask, bytesPerTask []int) []int {
	out := make([]int, len(inputsPerTask))
	if len(res.InputTokens) == sumInts(inputsPerTask) {
		off := 0
		for j, n := range inputsPerTask {
			out[j] = sumInts(res.InputTokens[off : off+n])
			off += n
		}
		return out
	}
	total := sumInts(bytesPerTask)
	if len(out) == 1 || total == 0 {
		out[len(out)-1] = res.PromptTokens
		return out
	}
	given := 0
	rems := make([]int, len(out))
	for j, n := range bytesPerTask {
		out[j] = res.PromptTokens * n / total
		rems[j] = res.PromptTokens * n % total
		given += out[j]
	}
	for left := res.PromptTokens - given; left > 0; left-- {
		best := 0
		for k := range rems {
			if rems[k] > rems[best] {
				best = k
			}
		}
		out[best]++
		rems[best] = -1
	}
	return out
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func (a *Agent) completion(t *task.Task, mv task.ModelVersion, response [32]byte, prompt, completion int, finish string) *task.Completion {
	req := t.Digest()
	c := &task.Completion{
		RequestID:        t.RequestID,
		WorkerID:         a.workerID,
		Model:            mv.Name, // the registered version that ran, whatever alias was asked for
		ModelDigest:      mv.Digest,
		RequestDigest:    hex.EncodeToString(req[:]),
		ResponseDigest:   hex.EncodeToString(response[:]),
		Subject:          t.Subject,
		PromptTokens:     prompt,
		CompletionTokens: completion,
		Time:             a.clock.Now().UTC(),
		FinishReason:     finish,
	}
	if err := a.produced.add(c); err != nil {
		a.logger.Error("completion record not persisted", "request_id", t.RequestID, "err", err)
	}
	return c
}

// findModel returns the version of ms named name.
func findModel(ms []task.ModelVersion, name string) (task.ModelVersion, bool) {
	for _, mv := range ms {
		if mv.Name == name {
			return mv, true
		}
	}
	return task.ModelVersion{}, false
}

// taskError renders why a task failed as an event error.
func taskError(ctx context.Context, err error) *task.EventError {
	if cause := context.Cause(ctx); cause != nil {
		err = cause
	}
	switch {
	case errors.Is(err, errCancelled), errors.Is(err, context.Canceled):
		return &task.EventError{Status: StatusClientClosed, Type: apierr.TypeInvalidRequest, Code: CodeCancelled, Message: "the request was cancelled"}
	case errors.Is(err, context.DeadlineExceeded):
		return eventError(apierr.Timeout("deadline_exceeded", "the request's deadline passed", err))
	}
	return eventError(apierr.From(err))
}

func eventError(e *apierr.Error) *task.EventError {
	return &task.EventError{Status: e.Status, Type: e.Type, Code: e.Code, Param: e.Param, Message: e.Message}
}

// emitter serializes calls to emit; the first failure cancels the batch and
// silences the rest.
type emitter struct {
	mu     sync.Mutex
	emit   func(task.Event) error
	cancel context.CancelFunc
	failed error
}

func (e *emitter) send(ev task.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed != nil {
		return e.failed
	}
	if err := e.emit(ev); err != nil {
		e.failed = err
		e.cancel()
		return err
	}
	return nil
}

func (e *emitter) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}

// Close releases the record store. Call it after Drain.
func (a *Agent) Close() error { return a.produced.close() }
