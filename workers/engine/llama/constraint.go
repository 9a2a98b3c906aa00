package llama

import (
	"cmp"
	"math"
	"slices"
	"sync"

	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
)

// Structured output (response_format json_object and json_schema) is
// grammar-constrained decoding: before each token is sampled, the tokens
// whose text cannot extend the document towards one the grammar accepts
// are masked, found by walking a trie of the vocabulary's decoded bytes
// with the recogniser (internal/jsongrammar), pruning a whole subtree at
// its first refused byte. EOS is allowed only when the document is
// complete, and generation stops, finish_reason "stop", as soon as its
// value is closed.
//
// Budget: a token is allowed only if the document can still be closed in
// the tokens left after it (max_tokens, capped by the context): the
// recogniser knows the fewest bytes that close every prefix, and every
// byte has a one-byte token (llama2.c vocabularies carry <0x00>..<0xFF>),
// so once the budget is tight the mask keeps just the tokens on a shortest
// closing path and the document ends complete at max_tokens at the latest.
// A vocabulary without the byte tokens may still run out; the mask then
// falls back to every token that keeps the document alive.
//
// Stop sequences (the client's and the chat turn's "\nUser:") are not
// applied while a format is active: the grammar decides where the text
// ends, and a stop string inside a JSON string would cut the document.

// tokenTrie is the vocabulary as a byte trie of decoded pieces (BOS, EOS
// and empty pieces left out).
type tokenTrie struct {
	nodes  []trieNode
	pieces [][]byte // per token: its decoded bytes (after a non-BOS token)
	// plain lists the tokens made only of plain string bytes
	// (jsongrammar.IsPlain), by length; other holds the rest as a trie,
	// walked alone inside a plain string (see constraint.mask).
	plain [][]int32
	other *tokenTrie
	depth int // longest piece
	// byteTokens: every printable ASCII byte is a token of its own, so a
	// closing path of n bytes needs at most n tokens.
	byteTokens bool
}

type trieNode struct {
	edges  []trieEdge // by byte
	tokens []int32    // tokens whose piece ends here
}

type trieEdge struct {
	b     byte
	child int32
}

func newTokenTrie(tok *Tokenizer) *tokenTrie {
	t := buildTrie(tok, func([]byte) bool { return true })
	t.other = buildTrie(tok, func(p []byte) bool { return !isPlain(p) })
	for id, p := range t.pieces {
		if len(p) > 0 && isPlain(p) {
			for len(t.plain) <= len(p) {
				t.plain = append(t.plain, nil)
			}
			t.plain[len(p)] = append(t.plain[len(p)], int32(id))
		}
	}
	return t
}

func isPlain(p []byte) bool {
	for _, b := range p {
		if !jsongrammar.IsPlain(b) {
			return false
		}
	}
	return true
}

// buildTrie is the trie of the pieces keep accepts.
func buildTrie(tok *Tokenizer, keep func([]byte) bool) *tokenTrie {
	t := &tokenTrie{nodes: []trieNode{{}}, pieces: make([][]byte, tok.VocabSize())}
	single := map[byte]bool{}
	for id := range tok.VocabSize() {
		if id == tokenBOS || id == tokenEOS {
			continue
		}
		p := []byte(tok.Decode(-1, id))
		if len(p) == 0 {
			continue
		}
		t.pieces[id] = p
		if !keep(p) {
			continue
		}
		t.depth = max(t.depth, len(p))
		if len(p) == 1 {
			single[p[0]] = true
		}
		at := int32(0)
		for _, b := range p {
			next := int32(-1)
			for _, e := range t.nodes[at].edges {
				if e.b == b {
					next = e.child
					break
				}
			}
			if next < 0 {
				next = int32(len(t.nodes))
				t.nodes = append(t.nodes, trieNode{})
				t.nodes[at].edges = append(t.nodes[at].edges, trieEdge{b, next})
			}
			at = next
		}
		t.nodes[at].tokens = append(t.nodes[at].tokens, int32(id))
	}
	for i := range t.nodes {
		slices.SortFunc(t.nodes[i].edges, func(a, b trieEdge) int { return cmp.Compare(a.b, b.b) })
	}
	t.byteTokens = true
	for b := byte(0x20); b < 0x7F; b++ {
		if !single[b] {
			t.byteTokens = false
		}
	}
	return t
}

// trie returns the engine's vocabulary trie, built on first use.
func (e *Engine) trie() *tokenTrie {
	e.grammarTrie.once.Do(func() { e.grammarTrie.t = newTokenTrie(e.tok) })
	return e.grammarTrie.t
}

type lazyTrie struct {
	once sync.Once
	t    *tokenTrie
}

// constraint is one sequence's grammar state. It is used by the one part
// of a step that samples its sequence.
type constraint struct {
	trie      *tokenTrie
	tok       *Tokenizer
	state     jsongrammar.State
	maxNew    int
	generated int
	afterBOS  bool // the first token follows BOS: its leading space is dropped
	done      bool

	stack   []jsongrammar.State // per trie depth
	allowed []int32             // within the budget
	live    []int32             // alive whatever the budget
	closest int                 // fewest bytes left to close after a live token
	probs   []probIndex
	steps   int // grammar steps the last mask took (trie edges tried)
}

func newConstraint(t *tokenTrie, tok *Tokenizer, g *jsongrammar.Grammar, maxNew int, afterBOS bool) *constraint {
	return &constraint{trie: t, tok: tok, state: g.Start(), maxNew: maxNew, afterBOS: afterBOS,
		stack: make([]jsongrammar.State, t.depth+2)}
}

// mask fills c.allowed with the tokens that may come next.
func (c *constraint) mask() []int32 {
	c.allowed, c.live, c.closest, c.steps = c.allowed[:0], c.live[:0], -1, 0
	left := c.maxNew - c.generated - 1 // tokens after this one
	if c.afterBOS {
		for id := range c.trie.pieces {
			p := []byte(c.tok.Decode(tokenBOS, id))
			if len(c.trie.pieces[id]) == 0 || len(p) == 0 {
				continue
			}
			c.steps += len(p)
			if s, ok := c.state.Feed(p); ok {
				c.keep(int32(id), s.Dist(), left)
			}
		}
	} else if c.state.InPlainString() {
		// Inside a plain string (every reading: an anyOf of string-valued
		// branches keeps up to 64) every plain token is accepted up to
		// maxLen: count them off by length, and walk only the others, so
		// the readings cost per length, not per trie node.
		for n, ids := range c.trie.plain {
			dn := c.state.PlainRunDist(n)
			if dn < 0 {
				break
			}
			for _, id := range ids {
				c.keep(id, dn, left)
			}
		}
		c.stack[0] = c.state
		c.walk(c.trie.other, 0, 0, left)
	} else {
		c.stack[0] = c.state
		c.walk(c.trie, 0, 0, left)
	}
	if c.state.Complete() {
		c.allowed = append(c.allowed, tokenEOS)
		c.live = append(c.live, tokenEOS)
	}
	if len(c.allowed) > 0 {
		return c.allowed
	}
	// No token keeps a closing path of one-byte tokens within the budget:
	// close as fast as the vocabulary allows, with the tokens that leave
	// the fewest bytes to write.
	c.allowed = c.allowed[:0]
	for _, id := range c.live {
		if id == tokenEOS {
			return append(c.allowed[:0], id)
		}
		if c.tokenDist(id) == c.closest {
			c.allowed = append(c.allowed, id)
		}
	}
	return c.allowed
}

// tokenDist is the fewest bytes that close the document after token id.
func (c *constraint) tokenDist(id int32) int {
	piece := c.trie.pieces[id]
	if c.afterBOS {
		piece = []byte(c.tok.Decode(tokenBOS, int(id)))
	}
	s, ok := c.state.Feed(piece)
	if !ok {
		return -1
	}
	return s.Dist()
}

func (c *constraint) keep(id int32, dist, left int) {
	if dist < 0 {
		return
	}
	c.live = append(c.live, id)
	if c.closest < 0 || dist < c.closest {
		c.closest = dist
	}
	if dist <= left {
		c.allowed = append(c.allowed, id)
	}
}

func (c *constraint) walk(t *tokenTrie, at int32, depth, left int) {
	cur, next := &c.stack[depth], &c.stack[depth+1]
	c.steps += len(t.nodes[at].edges)
	for _, e := range t.nodes[at].edges {
		if !cur.StepInto(next, e.b) {
			continue
		}
		child := &t.nodes[e.child]
		if len(child.tokens) > 0 {
			d := next.Dist()
			for _, id := range child.tokens {
				c.keep(id, d, left)
			}
		}
		if len(child.edges) > 0 {
			c.walk(t, e.child, depth+1, left)
		}
	}
}

// sample picks the next token among the allowed ones with smp's
// temperature, top_p and generator, and advances the grammar by it.
func (c *constraint) sample(smp *sampler, logits []float32) int {
	ids := c.mask()
	if len(ids) == 0 {
		// Dead: cannot happen for a compiled grammar (every live prefix
		// has a completion); end the generation rather than emit junk.
		c.done = true
		return tokenEOS
	}
	tok := c.pick(smp, logits, ids)
	if tok != tokenEOS {
		piece := c.trie.pieces[tok]
		if c.afterBOS {
			piece = []byte(c.tok.Decode(tokenBOS, tok))
		}
		c.state, _ = c.state.Feed(piece)
		c.generated++
		c.done = c.state.Done()
	}
	c.afterBOS = false
	return tok
}

func (c *constraint) pick(smp *sampler, logits []float32, ids []int32) int {
	if smp.temperature == 0 {
		best := ids[0]
		for _, id := range ids[1:] {
			if logits[id] > logits[best] || (logits[id] == logits[best] && id < best) {
				best = id
			}
		}
		return int(best)
	}
	c.probs = c.probs[:0]
	maxL := float32(math.Inf(-1))
	for _, id := range ids {
		maxL = max(maxL, logits[id])
	}
	var sum float64
	for _, id := range ids {
		p := math.Exp(float64(logits[id]-maxL) / float64(smp.temperature))
		c.probs = append(c.probs, probIndex{float32(p), int(id)})
		sum += p
	}
	for i := range c.probs {
		c.probs[i].prob = float32(float64(c.probs[i].prob) / sum)
	}
	// Descending probability, ties by ID, as sampleTopP orders them.
	slices.SortFunc(c.probs, func(a, b probIndex) int {
		if x := cmp.Compare(b.prob, a.prob); x != 0 {
			return x
		}
		return cmp.Compare(a.index, b.index)
	})
	last := len(c.probs) - 1
	if smp.topP > 0 && smp.topP < 1 {
		var cum float32
		for i, p := range c.probs {
			cum += p.prob
			if cum > smp.topP {
				last = i
				break
			}
		}
	}
	var total float32
	for _, p := range c.probs[:last+1] {
		total += p.prob
	}
	r := smp.randomF32() * total
	var cdf float32
	for _, p := range c.probs[:last+1] {
		cdf += p.prob
		if r < cdf {
			return p.index
		}
	}
	return c.probs[last].index
}
