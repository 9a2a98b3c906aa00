package llama

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
)

// hostileSchema keeps the most readings alive at once: an anyOf of
// nAlts free objects whose values are strings or arrays of strings, so
// inside a string every alternative is still a reading.
func hostileSchema() string {
	var alts []string
	for i := 0; i < nAlts; i++ {
		alts = append(alts, fmt.Sprintf(`{"type":"object","additionalProperties":{"anyOf":[{"type":"string","maxLength":%d},{"type":"array","items":{"type":"string"}}]}}`, 200+i))
	}
	return `{"anyOf":[` + strings.Join(alts, ",") + `]}`
}

const hostileDoc = `{"key one":["a \u00e9 b","the cat sat on the mat`

var nAlts = 64

// A client's schema keeps 64 readings alive while the model writes a
// string (most of a structured answer's tokens): the mask must not walk
// the whole vocabulary's trie once per reading there, or one request
// stalls the worker's batch. The plain-string shortcut counts plain
// tokens off by length and walks only the trie of the other pieces; this
// test holds every in-string mask to that walk (grammar steps, which are
// deterministic — the time per mask is BenchmarkHostileSchemaMask's).
func TestRedteamHostileSchemaMaskCost(t *testing.T) {
	schema := hostileSchema()
	g, err := jsongrammar.Compile([]byte(schema), false)
	if err != nil {
		t.Fatal(err)
	}
	tok := syntheticTokenizer(t)
	trie := newTokenTrie(tok)
	ids := longestMatch(trie, hostileDoc)
	c := newConstraint(trie, tok, g, 1<<20, false)
	otherEdges := len(trie.other.nodes) - 1
	inString := 0
	for _, id := range ids {
		plain := c.state.InPlainString()
		if len(c.mask()) == 0 {
			t.Fatal("empty mask")
		}
		if plain {
			inString++
			if c.steps > otherEdges {
				t.Fatalf("an in-string mask took %d grammar steps; the walk of the non-plain pieces has %d edges (the whole trie %d)",
					c.steps, otherEdges, len(trie.nodes)-1)
			}
		}
		var ok bool
		if c.state, ok = c.state.Feed(trie.pieces[id]); !ok {
			t.Fatalf("token %q refused", trie.pieces[id])
		}
	}
	if inString < len(ids)/2 {
		t.Fatalf("only %d of %d masks were inside a plain string: the document no longer exercises the shortcut", inString, len(ids))
	}
}

// BenchmarkHostileSchemaMask is the time per mask for the hostile schema
// above on a 32,000-piece vocabulary: ns/op is one whole document's masks,
// and the metrics give the mean and the worst single mask.
func BenchmarkHostileSchemaMask(b *testing.B) {
	g, err := jsongrammar.Compile([]byte(hostileSchema()), false)
	if err != nil {
		b.Fatal(err)
	}
	tok := syntheticTokenizer(b)
	trie := newTokenTrie(tok)
	ids := longestMatch(trie, hostileDoc)
	var worst, total float64
	b.ResetTimer()
	for b.Loop() {
		c := newConstraint(trie, tok, g, 1<<20, false)
		for _, id := range ids {
			t0 := time.Now()
			c.mask()
			d := float64(time.Since(t0))
			total += d
			worst = max(worst, d)
			c.state, _ = c.state.Feed(trie.pieces[id])
		}
	}
	b.ReportMetric(total/float64(b.N*len(ids))/1e6, "ms/mask")
	b.ReportMetric(worst/1e6, "worst-ms/mask")
}
