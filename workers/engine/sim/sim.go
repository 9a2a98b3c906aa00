// Package sim is a simulated inference engine for development and load
// tests: it serves one model with the latency of a real model/GPU pair
// (see Profile), deterministic text and embeddings, and honest token counts
// from a documented tokenizer (see Tokenize). It runs no model. Output is a
// pure function of the engine's seed and the request, so the same request
// always yields the same text on any simulated worker.
package sim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Config configures a simulated engine.
type Config struct {
	// Model is the model name served; empty means Profile.Model.
	Model string
	// Profile is the latency model; a zero Profile means Profiles()[DefaultProfile].
	Profile Profile
	// Seed makes the generated text differ between simulated deployments.
	Seed  int64
	Clock clock.Clock
	// TimeScale multiplies every simulated delay (0.01 runs a load test 100×
	// faster). 0 means 1 (real time). NoDelay skips delays entirely.
	TimeScale float64
	NoDelay   bool
	// SlowdownAfter, when > 0, multiplies all latencies by SlowdownFactor once
	// that many requests have completed (for the "one worker slows down
	// midway" bench). SetSlowdown does the same on demand.
	SlowdownAfter  int
	SlowdownFactor float64
}

// Engine is the simulator. It implements task.Engine and
// task.LoadReporter.
type Engine struct {
	cfg   Config
	prof  Profile
	model task.ModelVersion
	clock clock.Clock
	seqs  chan struct{} // running sequences, at most MaxNumSeqs

	mu        sync.Mutex
	waiting   int
	running   int
	kvTokens  int
	completed int
	slowdown  float64
}

var (
	_ task.Engine       = (*Engine)(nil)
	_ task.LoadReporter = (*Engine)(nil)
)

// New builds a simulated engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Profile.Name == "" {
		cfg.Profile = Profiles()[DefaultProfile]
	}
	if err := cfg.Profile.Validate(); err != nil {
		return nil, err
	}
	if cfg.Model == "" {
		cfg.Model = cfg.Profile.Model
	}
	if cfg.Model == "" || len(cfg.Model) > task.MaxModelNameLen {
		return nil, errField("model", "must be 1..256 bytes")
	}
	if cfg.TimeScale < 0 || math.IsNaN(cfg.TimeScale) {
		return nil, errField("time_scale", "must be >= 0")
	}
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 1
	}
	if cfg.SlowdownAfter > 0 && cfg.SlowdownFactor <= 0 {
		return nil, errField("slowdown_factor", "must be > 0 when slowdown_after is set")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	e := &Engine{
		cfg:      cfg,
		prof:     cfg.Profile,
		clock:    cfg.Clock,
		seqs:     make(chan struct{}, cfg.Profile.MaxNumSeqs),
		slowdown: 1,
	}
	e.model = task.ModelVersion{
		Name:          cfg.Model,
		Digest:        ModelDigest(cfg.Model, cfg.Profile),
		ContextLength: cfg.Profile.ContextLength,
		Embeddings:    true,
		OwnedBy:       "tollgate-sim",
	}
	return e, nil
}

// ModelDigest is the simulated model's weights digest: lowercase hex SHA-256
// of the JSON object {"simulator":"tollgate-sim/v1","model":MODEL,"profile":P}
// where P is the Profile marshalled with encoding/json (fields in declaration
// order, durations in nanoseconds). Changing any latency number changes it.
func ModelDigest(model string, p Profile) string {
	b, err := json.Marshal(struct {
		Simulator string  `json:"simulator"`
		Model     string  `json:"model"`
		Profile   Profile `json:"profile"`
	}{"tollgate-sim/v1", model, p})
	if err != nil {
		panic(err) // plain struct of strings and numbers
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Models lists the one model the simulator serves.
func (e *Engine) Models() []task.ModelVersion { return []task.ModelVersion{e.model} }

// Profile is the engine's latency profile.
func (e *Engine) Profile() Profile { return e.prof }

// SetSlowdown multiplies every latency from now on by factor (1 = normal).
func (e *Engine) SetSlowdown(factor float64) {
	if factor <= 0 || math.IsNaN(factor) {
		factor = 1
	}
	e.mu.Lock()
	e.slowdown = factor
	e.mu.Unlock()
}

// Load reports the simulator's queue and an estimate of KV-cache use.
func (e *Engine) Load(context.Context) (task.Load, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	kv := 0.0
	if e.prof.KVCacheTokens > 0 {
		kv = math.Min(1, float64(e.kvTokens)/float64(e.prof.KVCacheTokens))
	}
	return task.Load{Waiting: e.waiting, Running: e.running, KVCacheUsage: kv, Source: "sim"}, nil
}

// Generate simulates a chat or completion request.
func (e *Engine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	if t.Model != e.model.Name {
		return task.Result{}, apierr.NotFound("model", "model_not_found", "model %q is not served by this engine", t.Model)
	}
	var prompt string
	var promptTokens int
	switch t.Kind {
	case task.KindChat:
		prompt = renderChat(t.Messages)
		promptTokens = CountChat(t.Messages)
	case task.KindCompletion:
		prompt = t.Prompt
		promptTokens = CountTokens(t.Prompt)
	default:
		return task.Result{}, apierr.BadRequest("", "unsupported_kind", "the simulator cannot generate for a %q task", t.Kind)
	}
	budget := e.prof.ContextLength - promptTokens
	if budget < 1 {
		return task.Result{}, apierr.BadRequest("messages", "context_length_exceeded",
			"the prompt has %d tokens; this model's context is %d", promptTokens, e.prof.ContextLength)
	}
	rng := rand.New(rand.NewPCG(e.seedFor(t, prompt)))
	plan := planOutput(rng, t, budget)

	if err := e.admit(ctx, promptTokens+len(plan.tokens)); err != nil {
		return task.Result{}, err
	}
	defer e.leave(promptTokens + len(plan.tokens))

	ttft := time.Duration(float64(e.prof.PrefillOverhead+time.Duration(promptTokens)*e.prof.PrefillPerToken) * e.factor(rng))
	// Stopped part way, it still reports what it did: the prompt, and the
	// tokens emitted so far.
	if err := e.wait(ctx, ttft); err != nil {
		return task.Result{PromptTokens: promptTokens}, err
	}
	for i, tok := range plan.tokens {
		if i > 0 {
			if err := e.wait(ctx, time.Duration(float64(e.prof.InterTokenLatency)*e.factor(rng))); err != nil {
				return task.Result{PromptTokens: promptTokens, CompletionTokens: i}, err
			}
		}
		if err := emit(task.Delta{Text: tok, Tokens: 1}); err != nil {
			return task.Result{PromptTokens: promptTokens, CompletionTokens: i}, err
		}
	}
	e.done()
	return task.Result{FinishReason: plan.finish, PromptTokens: promptTokens, CompletionTokens: len(plan.tokens)}, nil
}

// Embed returns one deterministic unit-norm vector per input, in one call.
func (e *Engine) Embed(ctx context.Context, model string, inputs []string) (task.EmbedResult, error) {
	if model != e.model.Name {
		return task.EmbedResult{}, apierr.NotFound("model", "model_not_found", "model %q is not served by this engine", model)
	}
	res := task.EmbedResult{Vectors: make([][]float32, len(inputs)), InputTokens: make([]int, len(inputs))}
	for i, in := range inputs {
		n := CountTokens(in)
		if n > e.prof.ContextLength {
			return task.EmbedResult{}, apierr.BadRequest("input", "context_length_exceeded",
				"input %d has %d tokens; this model's context is %d", i, n, e.prof.ContextLength)
		}
		res.InputTokens[i] = n
		res.PromptTokens += n
	}
	if err := e.admit(ctx, res.PromptTokens); err != nil {
		return task.EmbedResult{}, err
	}
	defer e.leave(res.PromptTokens)
	h := sha256.Sum256([]byte(strings.Join(inputs, "\x00")))
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:8]), uint64(e.cfg.Seed)))
	d := time.Duration(float64(e.prof.PrefillOverhead+time.Duration(res.PromptTokens)*e.prof.PrefillPerToken) * e.factor(rng))
	if err := e.wait(ctx, d); err != nil {
		return task.EmbedResult{}, err
	}
	for i, in := range inputs {
		res.Vectors[i] = Embedding(e.model.Name, in, e.prof.EmbeddingDim)
	}
	e.done()
	return res, nil
}

// Embedding is the simulator's vector for one input: dim Gaussian values from
// a PCG seeded by SHA-256(model || 0x00 || input), scaled to unit L2 norm.
func Embedding(model, input string, dim int) []float32 {
	h := sha256.Sum256([]byte(model + "\x00" + input))
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16])))
	v := make([]float64, dim)
	norm := 0.0
	for i := range v {
		v[i] = rng.NormFloat64()
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dim)
	for i := range v {
		out[i] = float32(v[i] / norm)
	}
	return out
}

// admit takes a running slot, waiting in the queue if all MaxNumSeqs are
// busy, or refuses with 429 if MaxWaiting requests already wait.
func (e *Engine) admit(ctx context.Context, kvTokens int) error {
	select {
	case e.seqs <- struct{}{}:
	default:
		e.mu.Lock()
		if e.waiting >= e.prof.MaxWaiting {
			e.mu.Unlock()
			return apierr.RateLimited("engine_queue_full", "the engine's waiting queue is full", time.Second)
		}
		e.waiting++
		e.mu.Unlock()
		var err error
		select {
		case e.seqs <- struct{}{}:
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		e.mu.Lock()
		e.waiting--
		e.mu.Unlock()
		if err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.running++
	e.kvTokens += kvTokens
	e.mu.Unlock()
	return nil
}

func (e *Engine) leave(kvTokens int) {
	e.mu.Lock()
	e.running--
	e.kvTokens -= kvTokens
	e.mu.Unlock()
	<-e.seqs
}

func (e *Engine) done() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.completed++
	if e.cfg.SlowdownAfter > 0 && e.completed == e.cfg.SlowdownAfter {
		e.slowdown = e.cfg.SlowdownFactor
	}
}

// factor is load × slowdown × jitter for the next simulated step.
func (e *Engine) factor(rng *rand.Rand) float64 {
	e.mu.Lock()
	running, slow := e.running, e.slowdown
	e.mu.Unlock()
	return LoadFactor(e.prof, running) * slow * Jitter(e.prof, rng)
}

// LoadFactor is the profile's latency multiplier with running sequences.
func LoadFactor(p Profile, running int) float64 {
	if p.MaxNumSeqs <= 1 || running <= 1 {
		return 1
	}
	if running > p.MaxNumSeqs {
		running = p.MaxNumSeqs
	}
	return 1 + (p.TimeFactorUnderLoad-1)*float64(running-1)/float64(p.MaxNumSeqs-1)
}

// Jitter draws the bounded Gaussian factor N(1, JitterStdDev) clamped to
// [1 − JitterMax, 1 + JitterMax].
func Jitter(p Profile, rng *rand.Rand) float64 {
	j := 1 + rng.NormFloat64()*p.JitterStdDev
	return math.Max(1-p.JitterMax, math.Min(1+p.JitterMax, j))
}

// wait sleeps d (scaled) on the engine's clock, or returns when ctx is done.
func (e *Engine) wait(ctx context.Context, d time.Duration) error {
	if e.cfg.NoDelay {
		return context.Cause(ctx)
	}
	d = time.Duration(float64(d) * e.cfg.TimeScale)
	if d <= 0 {
		return context.Cause(ctx)
	}
	ch := make(chan struct{})
	timer := e.clock.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		timer.Stop()
		return context.Cause(ctx)
	}
}

// seedFor derives the request's generation seed: SHA-256 over the engine
// seed, the model, the rendered prompt, and the request's own seed if any.
// The request ID is left out, so identical requests give identical text.
func (e *Engine) seedFor(t *task.Task, prompt string) (uint64, uint64) {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(e.cfg.Seed))
	h.Write(b[:])
	fmt.Fprintf(h, "%s\x00%s\x00", e.model.Name, prompt)
	if t.Seed != nil {
		binary.LittleEndian.PutUint64(b[:], uint64(*t.Seed))
		h.Write(b[:])
	}
	sum := h.Sum(nil)
	return binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])
}

func renderChat(msgs []task.Message) string {
	var sb strings.Builder
	for _, m := range msgs {
		sb.WriteString(m.Role)
		sb.WriteByte('\x00')
		sb.WriteString(m.Name)
		sb.WriteByte('\x00')
		sb.WriteString(m.Content)
		sb.WriteByte('\x01')
	}
	return sb.String()
}

func errField(field, msg string) error {
	return fmt.Errorf("sim: %s %s", field, msg)
}
