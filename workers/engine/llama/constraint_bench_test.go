package llama

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
)

// syntheticTokenizer is a 32,000-piece vocabulary shaped like a real one:
// the three specials, the 256 byte pieces, then pieces of 1-12 bytes from
// letters, digits, space and JSON punctuation.
func syntheticTokenizer(t testing.TB) *Tokenizer {
	const vocab = 32000
	pieces := []string{"<unk>", "<s>", "</s>"}
	for b := 0; b < 256; b++ {
		pieces = append(pieces, fmt.Sprintf("<0x%02X>", b))
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789  \"{}[]:,._-"
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for len(pieces) < vocab {
		n := 1 + rng.IntN(12)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if !seen[string(b)] {
			seen[string(b)] = true
			pieces = append(pieces, string(b))
		}
	}
	scores := make([]float32, len(pieces))
	tok, err := parseTokenizer(buildTokenizer(16, pieces, scores), len(pieces))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// BenchmarkConstraintMask is the cost of the grammar mask per generated
// token: each iteration computes the allowed tokens before every token of
// a fixed valid document and then advances the grammar by that token, as
// a constrained generation does (sampling left out).
func BenchmarkConstraintMask(b *testing.B) {
	const schema = `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":150},"tags":{"type":"array","items":{"type":"string"}},"ok":{"type":"boolean"}},"required":["name","age","tags","ok"],"additionalProperties":false}`
	const doc = `{"name":"Lily the little cat","age":7,"tags":["happy","sun","park"],"ok":true}`
	grammars := map[string]*jsongrammar.Grammar{"json_object": jsongrammar.JSONObject()}
	g, err := jsongrammar.Compile([]byte(schema), true)
	if err != nil {
		b.Fatal(err)
	}
	grammars["schema"] = g
	vocabs := map[string]*Tokenizer{"stories260K": loadTokenizer(b), "synthetic32k": syntheticTokenizer(b)}
	for _, vname := range []string{"stories260K", "synthetic32k"} {
		tok := vocabs[vname]
		trie := newTokenTrie(tok)
		ids := longestMatch(trie, doc)
		for _, gname := range []string{"json_object", "schema"} {
			b.Run(vname+"/"+gname, func(b *testing.B) {
				b.ReportAllocs()
				steps := 0
				for b.Loop() {
					c := newConstraint(trie, tok, grammars[gname], 1<<20, false)
					for _, id := range ids {
						if len(c.mask()) == 0 {
							b.Fatal("empty mask")
						}
						var ok bool
						if c.state, ok = c.state.Feed(trie.pieces[id]); !ok {
							b.Fatalf("document token %d (%q) refused", id, trie.pieces[id])
						}
						steps++
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(steps), "ns/token")
			})
		}
	}
}

// longestMatch splits text into the vocabulary's longest pieces.
func longestMatch(t *tokenTrie, text string) []int32 {
	var ids []int32
	for len(text) > 0 {
		at, best, bestLen := int32(0), int32(-1), 0
		for i := 0; i < len(text); i++ {
			next := int32(-1)
			for _, e := range t.nodes[at].edges {
				if e.b == text[i] {
					next = e.child
				}
			}
			if next < 0 {
				break
			}
			at = next
			if len(t.nodes[at].tokens) > 0 {
				best, bestLen = t.nodes[at].tokens[0], i+1
			}
		}
		ids = append(ids, best)
		text = text[bestLen:]
	}
	return ids
}

// TestMaskPlainStringMatchesWalk: the plain-string shortcut allows exactly
// the tokens a full trie walk allows, with the same budget decisions.
func TestMaskPlainStringMatchesWalk(t *testing.T) {
	const schema = `{"type":"object","properties":{"a":{"type":"string","minLength":3,"maxLength":9},"b":{"type":"string"}},"required":["a","b"],"additionalProperties":false}`
	const doc = `{"a":"Lily cat","b":"the sun was big and hot"}`
	g, err := jsongrammar.Compile([]byte(schema), true)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]*Tokenizer{"stories260K": loadTokenizer(t), "synthetic32k": syntheticTokenizer(t)} {
		trie := newTokenTrie(tok)
		for _, budget := range []int{12, 20, 1 << 20} {
			c := newConstraint(trie, tok, g, budget+len(doc), false)
			for _, id := range longestMatch(trie, doc) {
				fast := slices.Clone(c.mask())
				c.allowed, c.live, c.closest = c.allowed[:0], c.live[:0], -1
				c.stack[0] = c.state
				c.walk(trie, 0, 0, c.maxNew-c.generated-1)
				if c.state.Complete() {
					c.allowed = append(c.allowed, tokenEOS)
				}
				slow := slices.Clone(c.allowed)
				slices.Sort(fast)
				slices.Sort(slow)
				if len(slow) > 0 && !slices.Equal(fast, slow) {
					t.Fatalf("%s budget %d at %q: shortcut allows %d tokens, walk %d", name, budget, c.trie.pieces[id], len(fast), len(slow))
				}
				c.state, _ = c.state.Feed(trie.pieces[id])
				c.generated++
			}
		}
	}
}

// TestMaskPlainStringManyReadings: with many readings inside strings (an
// anyOf of string-valued objects, each with its own maxLength), the
// shortcut still allows exactly the tokens a full trie walk allows.
func TestMaskPlainStringManyReadings(t *testing.T) {
	var alts []string
	for i := 0; i < 12; i++ {
		alts = append(alts, fmt.Sprintf(`{"type":"object","additionalProperties":{"anyOf":[{"type":"string","minLength":%d,"maxLength":%d},{"type":"array","items":{"type":"string","maxLength":%d}}]}}`, i, 3+2*i, 4+i))
	}
	schema := `{"anyOf":[` + strings.Join(alts, ",") + `]}`
	g, err := jsongrammar.Compile([]byte(schema), false)
	if err != nil {
		t.Fatal(err)
	}
	const doc = `{"key one":"abcdefghij","k":["a b","the cat sat"]}`
	tok := loadTokenizer(t)
	trie := newTokenTrie(tok)
	for _, budget := range []int{8, 20, 1 << 20} {
		c := newConstraint(trie, tok, g, budget+len(doc), false)
		for _, id := range longestMatch(trie, doc) {
			fast := slices.Clone(c.mask())
			c.allowed, c.live, c.closest = c.allowed[:0], c.live[:0], -1
			c.stack[0] = c.state
			c.walk(trie, 0, 0, c.maxNew-c.generated-1)
			if c.state.Complete() {
				c.allowed = append(c.allowed, tokenEOS)
			}
			slow := slices.Clone(c.allowed)
			slices.Sort(fast)
			slices.Sort(slow)
			if len(slow) > 0 && !slices.Equal(fast, slow) {
				t.Fatalf("budget %d at %q: shortcut allows %d tokens, walk %d", budget, c.trie.pieces[id], len(fast), len(slow))
			}
			var ok bool
			if c.state, ok = c.state.Feed(trie.pieces[id]); !ok {
				t.Fatalf("token %q refused", trie.pieces[id])
			}
			c.generated++
		}
	}
}
