package llama

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
)

// A client's schema keeps the most readings alive at once (an anyOf of
// many free objects/strings): the per-token mask must stay cheap enough
// that one request cannot stall the worker's batch.
var nAlts = 64

func TestRedteamHostileSchemaMaskCost(t *testing.T) {
	var alts []string
	for i := 0; i < nAlts; i++ {
		alts = append(alts, fmt.Sprintf(`{"type":"object","additionalProperties":{"anyOf":[{"type":"string","maxLength":%d},{"type":"array","items":{"type":"string"}}]}}`, 200+i))
	}
	schema := `{"anyOf":[` + strings.Join(alts, ",") + `]}`
	g, err := jsongrammar.Compile([]byte(schema), false)
	if err != nil {
		t.Fatal(err)
	}
	tok := syntheticTokenizer(t)
	trie := newTokenTrie(tok)
	doc := `{"key one":["a \u00e9 b","the cat sat on the mat`
	ids := longestMatch(trie, doc)
	c := newConstraint(trie, tok, g, 1<<20, false)
	var worst time.Duration
	start := time.Now()
	for _, id := range ids {
		t0 := time.Now()
		if len(c.mask()) == 0 {
			t.Fatal("empty mask")
		}
		worst = max(worst, time.Since(t0))
		var ok bool
		if c.state, ok = c.state.Feed(trie.pieces[id]); !ok {
			t.Fatalf("token %q refused", trie.pieces[id])
		}
	}
	t.Logf("%d tokens in %s, worst mask %s", len(ids), time.Since(start), worst)
	if worst > 200*time.Millisecond {
		t.Fatalf("one mask took %s with a %d-byte schema", worst, len(schema))
	}
}
