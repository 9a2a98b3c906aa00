package llama

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// Options configures Open. Zero values take the documented defaults.
type Options struct {
	// CheckpointFile and TokenizerFile override the files found in the
	// directory (relative names are taken inside it).
	CheckpointFile string
	TokenizerFile  string
	// ModelName is the served model name; default: the directory's base name.
	ModelName string
	// MaxNumSeqs bounds the sequences in the running batch (default 16).
	MaxNumSeqs int
	// KVCacheBytes bounds the KV cache reserved by running sequences; a
	// sequence reserves its whole context (prompt + max_tokens, capped by the
	// model's context length) when it joins. Default: room for MaxNumSeqs
	// full-context sequences.
	KVCacheBytes int64
	// MaxQueue bounds the sequences waiting to join; beyond it requests are
	// rejected with 429 (default 256).
	MaxQueue int
	// MaxBatchTokens bounds the positions one step runs, prompt prefill
	// included (default 128, at least MaxNumSeqs).
	MaxBatchTokens int
	// Threads is the goroutines one large step is split across, by rows
	// (default GOMAXPROCS; a worker process sharing its CPUs can bound it).
	// Steps under four rows always run on one.
	Threads int
	// Logger receives load and request logs (default: discard).
	Logger *slog.Logger
}

// Engine is the built-in CPU engine: one llama2.c checkpoint served with
// continuous batching. It implements task.Engine and task.LoadReporter.
type Engine struct {
	model   *model
	tok     *Tokenizer
	version task.ModelVersion
	opts    Options
	logger  *slog.Logger
	ws      *workspace // owned by the loop
	// grammarTrie is the vocabulary trie of structured output, built on
	// the first request that asks for it.
	grammarTrie lazyTrie

	mu      sync.Mutex
	waiting []*sequence
	kvUsed  int64
	closed  bool

	nRunning atomic.Int64
	steps    atomic.Int64
	wake     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once
	hook     func() // called by the loop before each step; nil in production
}

var (
	_ task.Engine       = (*Engine)(nil)
	_ task.LoadReporter = (*Engine)(nil)
)

// Open loads the checkpoint and tokenizer in dir and starts the batching
// loop. Without overrides, dir must hold exactly one tokenizer tok*.bin and
// one other *.bin, the checkpoint.
func Open(dir string, opts Options) (*Engine, error) {
	return open(dir, opts, nil)
}

// open is Open with a hook the loop calls before every step (tests use it
// to hold the loop still).
func open(dir string, opts Options, beforeStep func()) (*Engine, error) {
	ckpt, tokf, err := findFiles(dir, opts.CheckpointFile, opts.TokenizerFile)
	if err != nil {
		return nil, err
	}
	ckData, err := os.ReadFile(ckpt)
	if err != nil {
		return nil, fmt.Errorf("llama: read checkpoint: %w", err)
	}
	tokData, err := os.ReadFile(tokf)
	if err != nil {
		return nil, fmt.Errorf("llama: read tokenizer: %w", err)
	}
	cfg, w, err := parseCheckpoint(ckData)
	if err != nil {
		return nil, fmt.Errorf("llama: %s: %w", ckpt, err)
	}
	tok, err := parseTokenizer(tokData, cfg.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("llama: %s: %w", tokf, err)
	}
	if opts.ModelName == "" {
		opts.ModelName = filepath.Base(filepath.Clean(dir))
	}
	if opts.MaxNumSeqs <= 0 {
		opts.MaxNumSeqs = 16
	}
	if opts.KVCacheBytes <= 0 {
		opts.KVCacheBytes = int64(opts.MaxNumSeqs) * cfg.KVCacheBytes(cfg.SeqLen)
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 256
	}
	if opts.MaxBatchTokens <= 0 {
		opts.MaxBatchTokens = 128
	}
	opts.MaxBatchTokens = max(opts.MaxBatchTokens, opts.MaxNumSeqs)
	if opts.Threads <= 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := newModel(cfg, w)
	e := &Engine{
		model: m,
		tok:   tok,
		version: task.ModelVersion{
			Name:          opts.ModelName,
			Digest:        manifestDigest([]manifestFile{{filepath.Base(ckpt), ckData}, {filepath.Base(tokf), tokData}}),
			ContextLength: cfg.SeqLen,
			Embeddings:    true,
			OwnedBy:       "tollgate",
			// Every kernel reduces in a fixed order per row, whatever
			// the batch (see TestGoldenConcurrent), and sampling is
			// run.c's xorshift seeded by the task.
			Determinism: task.DeterminismExact,
			// Structured output by constrained decoding (constraint.go).
			Capabilities: []task.Capability{task.CapJSONObject, task.CapJSONSchema},
		},
		opts:   opts,
		logger: opts.Logger.With("model", opts.ModelName),
		ws:     m.newWorkspace(opts.MaxBatchTokens, opts.MaxNumSeqs, opts.Threads),
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		hook:   beforeStep,
	}
	e.logger.Info("llama engine loaded", "checkpoint", ckpt, "tokenizer", tokf, "digest", e.version.Digest,
		"dim", cfg.Dim, "layers", cfg.NLayers, "heads", cfg.NHeads, "kv_heads", cfg.NKVHeads,
		"vocab", cfg.VocabSize, "context", cfg.SeqLen, "max_num_seqs", opts.MaxNumSeqs, "threads", opts.Threads, "kv_cache_bytes", opts.KVCacheBytes)
	go e.loop()
	return e, nil
}

// Files returns the checkpoint and tokenizer Open would load from dir, or
// an error saying why dir does not hold exactly one of each. Callers use it
// to decide whether a model is there before falling back to another engine.
func Files(dir string) (checkpoint, tokenizer string, err error) {
	ckpt, tok, err := findFiles(dir, "", "")
	if err != nil {
		return "", "", err
	}
	for _, p := range []string{ckpt, tok} {
		if st, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("llama: %w", err)
		} else if !st.Mode().IsRegular() {
			return "", "", fmt.Errorf("llama: %s is not a regular file", p)
		}
	}
	return ckpt, tok, nil
}

// findFiles resolves the checkpoint and tokenizer paths.
func findFiles(dir, ckpt, tok string) (string, string, error) {
	inDir := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	ckpt, tok = inDir(ckpt), inDir(tok)
	if ckpt != "" && tok != "" {
		return ckpt, tok, nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.bin"))
	if err != nil {
		return "", "", fmt.Errorf("llama: list %s: %w", dir, err)
	}
	var ckpts, toks []string
	for _, p := range matches {
		if strings.HasPrefix(filepath.Base(p), "tok") {
			toks = append(toks, p)
		} else {
			ckpts = append(ckpts, p)
		}
	}
	pick := func(have string, found []string, what string) (string, error) {
		if have != "" {
			return have, nil
		}
		if len(found) != 1 {
			return "", fmt.Errorf("llama: %s: want exactly one %s file, found %d (%s); name it in the options",
				dir, what, len(found), strings.Join(found, ", "))
		}
		return found[0], nil
	}
	if ckpt, err = pick(ckpt, ckpts, "checkpoint *.bin"); err != nil {
		return "", "", err
	}
	if tok, err = pick(tok, toks, "tokenizer tok*.bin"); err != nil {
		return "", "", err
	}
	return ckpt, tok, nil
}

type manifestFile struct {
	name string
	data []byte
}

// manifestDigest is the model version's digest: workers' version-1 weights
// manifest (see workers.ManifestDigest) over exactly the files the engine
// loaded, named by base name:
//
//	tollgate-manifest-v1\n
//	<sha256 hex> <size in bytes> <name>\n   (one line per file, sorted by name)
//
// and the lowercase hex SHA-256 of that text. It equals
// workers.ManifestDigest(dir) when dir holds just the checkpoint and the
// tokenizer; other files beside them (a README) do not change it.
func manifestDigest(files []manifestFile) string {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b manifestFile) int { return cmp.Compare(a.name, b.name) })
	h := sha256.New()
	io.WriteString(h, workers.ManifestHeader+"\n")
	for _, f := range files {
		sum := sha256.Sum256(f.data)
		fmt.Fprintf(h, "%s %d %s\n", hex.EncodeToString(sum[:]), len(f.data), f.name)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Close stops the batching loop; running and queued requests fail with 503.
func (e *Engine) Close() error {
	e.once.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.quit)
		<-e.done
		e.ws.close()
	})
	return nil
}

// Models returns the one model version this engine serves.
func (e *Engine) Models() []task.ModelVersion { return []task.ModelVersion{e.version} }

// Config returns the checkpoint's hyperparameters.
func (e *Engine) Config() Config { return e.model.cfg }

// Tokenizer returns the engine's tokenizer (for counting prompt tokens).
func (e *Engine) Tokenizer() *Tokenizer { return e.tok }

// Load reports the engine's own queue and KV-cache use.
func (e *Engine) Load(context.Context) (task.Load, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return task.Load{
		Waiting:      len(e.waiting),
		Running:      int(e.nRunning.Load()),
		KVCacheUsage: float64(e.kvUsed) / float64(e.opts.KVCacheBytes),
		Source:       "llama",
	}, nil
}

// ChatPrompt renders chat messages in the engine's prompt format (see the
// package comment): one "Role: content" line per message, then "Assistant:".
func ChatPrompt(msgs []task.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(roleLabel(m.Role))
		b.WriteString(": ")
		b.WriteString(m.Content)
		b.WriteByte('\n')
	}
	b.WriteString("Assistant:")
	return b.String()
}

func roleLabel(role string) string {
	switch role {
	case "system", "developer":
		return "System"
	case "user":
		return "User"
	case "assistant":
		return "Assistant"
	case "tool":
		return "Tool"
	}
	if role == "" {
		return "User"
	}
	r, n := utf8.DecodeRuneInString(role)
	return strings.ToUpper(string(r)) + role[n:]
}

// chatStop ends a chat turn where the model starts writing the user's next one.
const chatStop = "\nUser:"

func (e *Engine) checkModel(model string) error {
	if model != "" && model != e.version.Name {
		return apierr.NotFound("model", "model_not_found", "model %q is not served by this engine (it serves %q)", model, e.version.Name)
	}
	return nil
}

// checkTextLen rejects text that cannot fit the context before tokenizing
// it: no piece is longer than the tokenizer's max_token_length, so longer
// text needs more tokens than the context holds.
func (e *Engine) checkTextLen(param, text string) error {
	if limit := e.model.cfg.SeqLen * e.tok.maxLen; len(text) > limit {
		return apierr.BadRequest(param, "context_length_exceeded",
			"the %s is %d bytes, more than this model's context of %d tokens can hold", param, len(text), e.model.cfg.SeqLen)
	}
	return nil
}

// request is a validated generation request.
type request struct {
	id          string
	prompt      []int
	maxNew      int
	temperature float32
	topP        float32
	seed        uint64
	stop        []string
	grammar     *jsongrammar.Grammar // response_format; nil: free text
}

func (e *Engine) newRequest(t *task.Task) (*request, error) {
	if err := e.checkModel(t.Model); err != nil {
		return nil, err
	}
	var text string
	stop := slices.DeleteFunc(slices.Clone(t.Stop), func(s string) bool { return s == "" })
	switch t.Kind {
	case task.KindCompletion:
		text = t.Prompt
	case task.KindChat:
		if len(t.Messages) == 0 {
			return nil, apierr.BadRequest("messages", "invalid_value", "messages must not be empty")
		}
		text = ChatPrompt(t.Messages)
		stop = append(stop, chatStop)
	default:
		return nil, apierr.BadRequest("", "invalid_value", "the llama engine cannot run a %q task with Generate", t.Kind)
	}
	switch {
	case t.MaxTokens < 0:
		return nil, apierr.BadRequest("max_tokens", "invalid_value", "max_tokens must not be negative")
	case !(t.Temperature >= 0 && t.Temperature <= 2):
		return nil, apierr.BadRequest("temperature", "invalid_value", "temperature must be in [0, 2]")
	case !(t.TopP >= 0 && t.TopP <= 1):
		return nil, apierr.BadRequest("top_p", "invalid_value", "top_p must be in [0, 1]")
	}
	seqLen := e.model.cfg.SeqLen
	if err := e.checkTextLen("prompt", text); err != nil {
		return nil, err
	}
	prompt := e.tok.Encode(text, true)
	if len(prompt) > seqLen {
		return nil, apierr.BadRequest("prompt", "context_length_exceeded",
			"the prompt is %d tokens; this model's context length is %d", len(prompt), seqLen)
	}
	maxNew := seqLen - len(prompt) + 1 // the last generated token need not be run
	if t.MaxTokens > 0 {
		maxNew = min(maxNew, t.MaxTokens)
	}
	g, err := jsongrammar.ForFormat(t.ResponseFormat)
	if err != nil {
		return nil, apierr.BadRequest("response_format", "invalid_value", "Invalid 'response_format': %v", err)
	}
	if g != nil {
		stop = nil // the grammar ends the text (constraint.go)
	}
	r := &request{id: t.RequestID, prompt: prompt, maxNew: maxNew,
		temperature: float32(t.Temperature), topP: float32(t.TopP), stop: stop, grammar: g}
	if t.Seed != nil {
		r.seed = uint64(*t.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		r.seed = binary.LittleEndian.Uint64(b[:])
	}
	return r, nil
}

// enqueue adds sequences to the waiting queue, all or none.
func (e *Engine) enqueue(seqs ...*sequence) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return apierr.Unavailable("engine_closed", "the model engine is shutting down", nil)
	}
	for _, s := range seqs {
		if s.kvBytes > e.opts.KVCacheBytes {
			return apierr.BadRequest("max_tokens", "context_length_exceeded",
				"the request needs %d positions of KV cache, more than this engine's whole budget; lower max_tokens", s.capacity)
		}
	}
	if len(e.waiting)+len(seqs) > e.opts.MaxQueue {
		return apierr.RateLimited("engine_queue_full", "the model engine's queue is full; retry shortly", time.Second)
	}
	e.waiting = append(e.waiting, seqs...)
	e.signal()
	return nil
}

// abandon marks a sequence cancelled and takes it out of the queue at once;
// a running one is freed by the loop before its next step.
func (e *Engine) abandon(s *sequence) {
	if s.cancelled.Swap(true) {
		return
	}
	e.mu.Lock()
	if i := slices.Index(e.waiting, s); i >= 0 {
		e.waiting = slices.Delete(e.waiting, i, i+1)
	}
	e.mu.Unlock()
	e.signal()
}

func (e *Engine) newSequence(id string, prompt []int, embed bool, maxNew int, smp *sampler) *sequence {
	capacity := len(prompt)
	if !embed {
		capacity += maxNew - 1
	}
	s := &sequence{requestID: id, prompt: prompt, embed: embed, maxNew: maxNew, capacity: capacity,
		kvBytes: e.model.cfg.KVCacheBytes(capacity), sampler: smp,
		out: make(chan seqEvent, maxNew+1)}
	if embed {
		s.hidden = make([]float64, e.model.cfg.Dim)
	}
	return s
}

// run generates tokens for r, calling onToken for each one in order, and
// returns how the sequence ended. The stream stops early, with onToken's
// error, when onToken fails or ctx is done.
func (e *Engine) run(ctx context.Context, r *request, onToken func(tok int) error) (string, error) {
	smp := newSampler(e.model.cfg.VocabSize, r.temperature, r.topP, r.seed)
	if r.grammar != nil {
		smp.con = newConstraint(e.trie(), e.tok, r.grammar, r.maxNew, r.prompt[len(r.prompt)-1] == tokenBOS)
	}
	s := e.newSequence(r.id, r.prompt, false, r.maxNew, smp)
	if err := e.enqueue(s); err != nil {
		return "", err
	}
	defer e.abandon(s)
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case ev := <-s.out:
			switch {
			case ev.err != nil:
				return "", ev.err
			case ev.isFinal:
				return ev.finish, nil
			}
			if err := onToken(ev.token); err != nil {
				return "", err
			}
		}
	}
}

// errStopped ends a stream when a stop sequence matched.
var errStopped = errors.New("stop sequence matched")

// Generate runs a completion or chat task, streaming text as tokens are
// produced. The text is the generated continuation only (not the prompt);
// a matched stop sequence ends it and is not included.
func (e *Engine) Generate(ctx context.Context, t *task.Task, emit func(task.Delta) error) (task.Result, error) {
	r, err := e.newRequest(t)
	if err != nil {
		return task.Result{}, err
	}
	out := newStopWriter(r.stop, emit)
	prev := r.prompt[len(r.prompt)-1]
	generated := 0
	finish, err := e.run(ctx, r, func(tok int) error {
		generated++
		piece := e.tok.Decode(prev, tok)
		prev = tok
		return out.write(piece)
	})
	switch {
	case errors.Is(err, errStopped):
		finish = "stop"
	case err != nil:
		// Stopped part way: what was done is still reported.
		e.logger.Debug("generation ended early", "request_id", t.RequestID, "err", err)
		return task.Result{PromptTokens: len(r.prompt), CompletionTokens: generated}, err
	default:
		if err := out.flush(); err != nil {
			return task.Result{}, err
		}
	}
	return task.Result{FinishReason: finish, PromptTokens: len(r.prompt), CompletionTokens: generated}, nil
}

// Embed embeds every input in one batched engine call: each input runs as a
// sequence (BOS + tokens) and its vector is the unit-normalized mean of the
// final hidden states (after the final RMSNorm) over its token positions,
// BOS excluded unless the input is empty.
func (e *Engine) Embed(ctx context.Context, model string, inputs []string) (task.EmbedResult, error) {
	if err := e.checkModel(model); err != nil {
		return task.EmbedResult{}, err
	}
	if len(inputs) == 0 {
		return task.EmbedResult{}, apierr.BadRequest("input", "invalid_value", "input must not be empty")
	}
	seqs := make([]*sequence, len(inputs))
	perInput := make([]int, len(inputs))
	total := 0
	for i, in := range inputs {
		if err := e.checkTextLen("input", in); err != nil {
			return task.EmbedResult{}, err
		}
		p := e.tok.Encode(in, true)
		if len(p) > e.model.cfg.SeqLen {
			return task.EmbedResult{}, apierr.BadRequest("input", "context_length_exceeded",
				"input %d is %d tokens; this model's context length is %d", i, len(p), e.model.cfg.SeqLen)
		}
		total += len(p)
		perInput[i] = len(p)
		seqs[i] = e.newSequence(fmt.Sprintf("embedding-%d", i), p, true, 0, nil)
	}
	if err := e.enqueue(seqs...); err != nil {
		return task.EmbedResult{}, err
	}
	defer func() {
		for _, s := range seqs {
			e.abandon(s)
		}
	}()
	vecs := make([][]float32, len(inputs))
	for i, s := range seqs {
		select {
		case <-ctx.Done():
			return task.EmbedResult{}, ctx.Err()
		case ev := <-s.out:
			if ev.err != nil {
				return task.EmbedResult{}, ev.err
			}
			vecs[i] = ev.pooled
		}
	}
	return task.EmbedResult{Vectors: vecs, PromptTokens: total, InputTokens: perInput}, nil
}
