package audit

import (
	"fmt"
	"unicode/utf8"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Output is one execution of a request: the worker's completion record and,
// when the caller had it, the text it produced.
type Output struct {
	Completion task.Completion
	Text       string
	HasText    bool
}

// Verdict is a comparator's answer for two executions of one request.
type Verdict struct {
	Match bool
	// Detail says what differed (or how closely they agreed), for the
	// dispute's evidence and the logs.
	Detail string
	// Divergence is the first byte at which the texts differ (-1: equal,
	// or texts not compared).
	Divergence int
}

// Comparator decides whether two executions of the same request on the
// same model version agree. Both Outputs have equal request digests and
// model versions (the auditor checks that before it compares).
type Comparator interface {
	Name() string
	Compare(a, b *Output) Verdict
}

// Exact is the comparator for engines that declare bit-exact determinism
// (task.DeterminismExact): the response digests must be equal, and so
// must the token counts (a worker that bills more tokens than it served is
// caught the same way).
type Exact struct{}

var _ Comparator = Exact{}

func (Exact) Name() string { return "exact" }

func (Exact) Compare(a, b *Output) Verdict {
	ca, cb := &a.Completion, &b.Completion
	v := Verdict{Divergence: -1}
	switch {
	case ca.ResponseDigest != cb.ResponseDigest:
		v.Detail = fmt.Sprintf("response digests differ: %s vs %s", ca.ResponseDigest, cb.ResponseDigest)
		if a.HasText && b.HasText {
			v.Divergence = divergence(a.Text, b.Text)
		}
	case ca.PromptTokens != cb.PromptTokens || ca.CompletionTokens != cb.CompletionTokens:
		v.Detail = fmt.Sprintf("token counts differ: %d+%d vs %d+%d", ca.PromptTokens, ca.CompletionTokens, cb.PromptTokens, cb.CompletionTokens)
	default:
		v.Match, v.Detail = true, "response digests and token counts equal"
	}
	return v
}

// Prefix is the statistical comparator for engines that do not promise
// bit-exact output (vLLM or llama.cpp with batching: a reduction order that
// changes with the batch can flip a near-tie late in a greedy decode). It
// is meant for greedy tasks only.
//
// The test: let d be the first byte where the two texts differ and
// n = min(len(a), len(b)) (both cut back to whole UTF-8 runes). The
// executions agree when d ≥ min(MinAgree, n), that is when the texts agree
// over their first MinAgree bytes or until the shorter one ends; equal
// texts must also have completion token counts within MaxTokenSkew.
// Same weights decode the same greedy prefix until the first near-tie; other
// weights (a cheaper model, a perturbed checkpoint) diverge within a few
// tokens. MinAgree trades the two errors: a false dispute needs an honest
// engine to flip a token in its first MinAgree bytes, a missed one needs a
// different model to agree that long. The built-in engine's calibration is
// in prefix_test.go; calibrate again for an engine before trusting it.
type Prefix struct {
	// MinAgree is the number of leading bytes that must agree (default 64,
	// about 16 tokens of English).
	MinAgree int
	// MaxTokenSkew bounds how far apart the completion token counts of
	// equal texts may be (default 0: equal).
	MaxTokenSkew int
}

var _ Comparator = Prefix{}

func (Prefix) Name() string { return "prefix" }

func (p Prefix) Compare(a, b *Output) Verdict {
	if !a.HasText || !b.HasText {
		return Verdict{Divergence: -1, Detail: "no text to compare"}
	}
	minAgree := p.MinAgree
	if minAgree <= 0 {
		minAgree = 64
	}
	d := divergence(a.Text, b.Text)
	n := min(len(a.Text), len(b.Text))
	need := min(minAgree, n)
	v := Verdict{Divergence: d}
	if d >= 0 && d < need {
		v.Detail = fmt.Sprintf("texts diverge at byte %d (need %d agreeing)", d, need)
		return v
	}
	if d < 0 {
		ta, tb := a.Completion.CompletionTokens, b.Completion.CompletionTokens
		if skew := max(ta-tb, tb-ta); skew > p.MaxTokenSkew {
			v.Detail = fmt.Sprintf("same text, completion tokens %d vs %d", ta, tb)
			return v
		}
	}
	v.Match = true
	if d < 0 {
		v.Detail = "texts equal"
	} else {
		v.Detail = fmt.Sprintf("texts agree over %d bytes (need %d)", d, need)
	}
	return v
}

// divergence is the first byte offset where a and b differ, at a rune
// boundary of both; -1 when they are equal. When one is a prefix of the
// other it is the shorter one's length.
func divergence(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == len(a) && i == len(b) {
		return -1
	}
	for i > 0 && (i < len(a) && !utf8.RuneStart(a[i]) || i < len(b) && !utf8.RuneStart(b[i])) {
		i--
	}
	return i
}
