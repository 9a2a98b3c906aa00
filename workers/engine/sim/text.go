package sim

import (
	"math/rand/v2"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Output lengths: a request that sets no max_tokens gets a natural length
// drawn uniformly from [minNatural, maxNatural] tokens.
const (
	minNatural = 16
	maxNatural = 256
)

// vocabulary: every word is at most 8 letters, so each is exactly one token
// of the simulator's tokenizer (with its leading space).
var vocabulary = strings.Fields(`the a of and to in is that it was for on are as with his they at be this
from have or by one had not but what all were when we there can an your which their said if do will
each about how up out them then she many some so these would other into has more her two like him see
time could no make than first been its who now people my made over did down only way find use may
water long little very after words called just where most know get through back much go good new
write our me man too any day same right look think also around another came come work three word must
because does part even place well such here take why things help put years away again off
went old number great tell men say small every found still between name should home big give air line
set own under read last never us left end along while might next sound below saw thought
both few those always looked show large often together asked house world going want school
until form food keep children feet land side without boy once animals life enough took four
head above kind began almost live page got earth need far hand high year mother light parts country
father let night picture being study second eyes soon times story boys since white days
paper hard near sentence better best across during today others sure means knew its try told young
miles sun ways thing whole hear example heard several change answer room sea against top turned learn
point city play toward five using himself usually river gateway worker token receipt proof model`)

type outputPlan struct {
	tokens []string
	finish string
}

// planOutput draws the whole output up front: a natural length, capped by
// max_tokens and the context budget (finish "length"), then cut at the first
// stop sequence (finish "stop"; the stop text itself is not returned).
func planOutput(rng *rand.Rand, t *task.Task, budget int) outputPlan {
	natural := minNatural + rng.IntN(maxNatural-minNatural+1)
	limit := budget
	if t.MaxTokens > 0 && t.MaxTokens < limit {
		limit = t.MaxTokens
	}
	n, finish := natural, "stop"
	if n > limit {
		n, finish = limit, "length"
	}
	tokens := make([]string, 0, n)
	startSentence := true
	for len(tokens) < n {
		switch {
		case !startSentence && rng.IntN(10) == 0:
			tokens = append(tokens, ".")
			startSentence = true
			continue
		case !startSentence && rng.IntN(14) == 0:
			tokens = append(tokens, ",")
			continue
		}
		w := vocabulary[rng.IntN(len(vocabulary))]
		if startSentence {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		if len(tokens) > 0 {
			w = " " + w
		}
		tokens = append(tokens, w)
		startSentence = false
	}
	return cutAtStop(outputPlan{tokens, finish}, t.Stop)
}

// cutAtStop ends the output before the earliest stop sequence. The token in
// which the stop begins is kept up to the stop (it was generated, so it
// counts), and tokens after it are dropped.
func cutAtStop(p outputPlan, stops []string) outputPlan {
	if len(stops) == 0 {
		return p
	}
	full := strings.Join(p.tokens, "")
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(full, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return p
	}
	out := outputPlan{finish: "stop"}
	pos := 0
	for _, tok := range p.tokens {
		if pos+len(tok) <= cut {
			out.tokens = append(out.tokens, tok)
			pos += len(tok)
			continue
		}
		if pos < cut {
			out.tokens = append(out.tokens, tok[:cut-pos])
		}
		break
	}
	return out
}
