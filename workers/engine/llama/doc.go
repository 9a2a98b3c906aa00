// Package llama is Tollgate's built-in CPU engine: pure-Go inference of
// Llama-architecture models stored in llama2.c's legacy checkpoint format
// (for example Karpathy's tinyllamas stories260K), served with continuous
// batching. It needs no cgo, GPU or network.
//
// # Files
//
// Open reads a checkpoint (*.bin: seven little-endian int32 — dim, hidden_dim,
// n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
// means a separate classifier follows — then float32 weights) and a
// tokenizer (tok*.bin: int32 max_token_length, then per token float32 score,
// int32 length, bytes). Sizes are checked against the header; a truncated or
// inconsistent file is an error, never a panic.
//
// The model version's digest is workers' version-1 weights manifest over
// exactly the two files loaded (see workers.ManifestDigest): the SHA-256 of
// "tollgate-manifest-v1\n" followed by "<sha256 hex> <size> <base name>\n"
// per file, sorted by name. It equals workers.ManifestDigest of a directory
// holding just those two files; a README beside them does not change it.
//
// # Exactness
//
// The forward pass (RMSNorm, RoPE, grouped-query attention with a KV cache,
// SwiGLU, shared or separate classifier), the tokenizer and greedy sampling
// reproduce llama2.c's run.c bit for bit: the same float32 operations in the
// same order, whatever else shares the batch.
//
// A golden case of ../shared/models/stories260K/golden.json (prompt P,
// steps S, prompt_tokens of length L, BOS included) maps to a completion
// request {prompt: P, temperature: 0, max_tokens: S - L + 1}: run.c runs S
// positions and the first L-1 of them only replay the prompt, so S-L+1
// tokens are generated; they are next_tokens[L-1:]. run.c's printed text is
// the decoded prompt followed by the generated text, and for these prompts
// the decoded prompt is P itself, so the completion text is text[len(P):].
// Usage reports L prompt tokens and S-L+1 completion tokens (fewer if BOS
// ended the generation early, which ends it with finish_reason "stop").
//
// # Generation
//
// Temperature 0 is greedy (the first maximum on ties). Otherwise logits are
// divided by the temperature and sampled, from the top_p nucleus when
// 0 < top_p < 1, with run.c's xorshift generator seeded by the request's
// seed (random when absent), so a seed reproduces its output. Generation
// ends at EOS or BOS (finish "stop"), at a stop sequence (finish "stop"; the
// stop text is not returned and text that may begin one is held back while
// streaming; not while a response_format is active), at max_tokens, or when the context is full (finish "length").
// (run.c itself stops only at BOS and prints EOS; no golden case produces
// EOS.) The context holds seq_len positions: a prompt of L tokens can
// generate at most seq_len-L+1 tokens, since the last one is never fed back.
//
// # Chat
//
// The models have no chat template; a chat is rendered as plain text, one
// line per message and an open assistant turn:
//
//	System: <content>
//	User: <content>
//	Assistant: <content>
//	User: <content>
//	Assistant:
//
// (roles "system"/"developer" → System, "user" → User, "assistant" →
// Assistant, "tool" → Tool). Generation also stops at "\nUser:".
//
// # Structured output
//
// response_format json_object and json_schema are served by
// grammar-constrained decoding (constraint.go, internal/jsongrammar):
// before each token is sampled, every token whose decoded bytes cannot
// extend the text towards a document the grammar accepts is masked (a
// trie of the vocabulary walked with the recogniser; inside a string, for
// every reading the recogniser keeps, tokens of plain string bytes are
// counted off by length without walking, so an anyOf of many
// string-valued branches does not multiply the walk), then the
// usual greedy, temperature or top_p choice runs over what is left, with
// the same seeded generator. EOS is allowed only once the document is
// complete; generation stops, finish_reason "stop", as soon as its value
// closes. A token is allowed only if the document can still be closed in
// the tokens left (max_tokens capped by the context): when the budget is
// tight only tokens on a shortest closing path remain, so the answer is
// complete, valid JSON at max_tokens whenever the shortest document fits in
// that many one-byte tokens (the tokens left can always close it); when
// even that does not fit, the tokens that leave the fewest bytes are taken
// and the answer may be cut (finish "length"). Output is compact (no
// whitespace outside strings) and lists properties in the schema's order.
// Stop sequences, the client's and "\nUser:", are not applied while a
// format is active. A schema that does not compile fails the task with 400
// naming response_format. The model version declares the json_object and
// json_schema capabilities.
//
// Cost of the mask per token (BenchmarkConstraintMask, an 80-byte
// document, two shared cores): stories260K (512 pieces) 9.8 µs for
// json_object and 8.7 µs for a schema, against about 540 µs for the
// forward pass of one token on the same machine (BenchmarkSingleSequence,
// 1,865 tok/s); a synthetic 32,000-piece vocabulary 0.42 ms and 0.26 ms.
// A hostile schema keeping the most readings alive (an 8 KB anyOf of 64
// free objects, TestRedteamHostileSchemaMaskCost) costs at most about
// 80 ms for one mask on the 32k vocabulary (it was about 214 ms for
// every token inside a string): masks are computed serially in a step,
// so this is the longest one request can hold its batch per token.
//
// # Embeddings
//
// An input's embedding is the mean of the final hidden states (after the
// final RMSNorm) over its token positions (BOS excluded unless the input is
// empty), scaled to unit length. All inputs of a call run in the same
// batches.
//
// # Batching
//
// One goroutine runs the model. Each step it admits queued sequences while
// fewer than MaxNumSeqs run and their reserved KV cache (whole context:
// prompt plus max_tokens, capped by the context length) fits in
// KVCacheBytes, drops cancelled ones, and runs one batched forward pass over
// every running sequence — one row per decoding sequence, several prompt
// positions per prefilling one within MaxBatchTokens — reading each weight
// matrix once per part of the batch. Steps of four rows or more are split
// by rows, whole sequences at a time, into Options.Threads parts of about
// equal cost, each run start to finish on its own goroutine (one hand-off
// per step; a per-layer split needed five barriers a layer, which lost more
// than it gained on a busy machine); no result depends on the split. The
// hand-off is an atomic step counter that idle helpers poll for a short
// while before parking, since waking a parked goroutine cost tens of
// microseconds on a VM.
// Tokens go to each request's goroutine over a channel buffered for the
// whole generation, so a slow client never stalls the batch; a full queue
// (MaxQueue) answers 429.
//
// # Vector kernels
//
// Built with GOEXPERIMENT=simd on amd64, the package uses simd/archsimd
// where the CPU has AVX2 (AVX-512 for 16 lanes), checked at run time: the
// batched matmul runs on a copy of each weight matrix transposed at load,
// vectorized across output columns with one broadcast input value per row
// (the copy is skipped past 256 MiB of matrices, falling back to a kernel
// vectorized across the batch, input rows transposed so that one lane is
// one row); a lone row keeps run.c's scalar loop. Attention for heads of
// eight dimensions is vectorized across positions (scores; keys are cached transposed for it), across a
// head's dimensions (weighted sum of values) and with a vector exponential
// (softmax, also the sampler's). Every lane does a separate multiply and add
// (never a fused multiply-add) in run.c's summation order, so results stay
// bit-identical to the scalar code, which is the fallback in every other
// build and on other CPUs.
package llama
