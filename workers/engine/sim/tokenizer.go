package sim

import (
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// The simulator's tokenizer. It is not any real model's tokenizer; it is
// simple, documented and stable so token counts are honest and reproducible:
//
//   - Whitespace is not a token on its own: a run of whitespace is attached to
//     the front of the token that follows it (as GPT-style tokenizers do with
//     a leading space). Whitespace at the very end of the text is one token.
//   - A run of letters is one token per 8 letters (a 20-letter word is 3
//     tokens: 8 + 8 + 4).
//   - A run of digits is one token per 3 digits.
//   - Every other character (punctuation, symbols, emoji) is one token.
//
// Chat prompts count like OpenAI's published accounting for chat formats:
// 3 tokens of framing per message, plus its role, content and name, plus 3
// tokens that prime the assistant's reply.
const (
	maxLetterRun       = 8
	maxDigitRun        = 3
	tokensPerMessage   = 3
	tokensReplyPriming = 3
)

// Tokenize splits s into the simulator's tokens. Concatenating them gives s.
func Tokenize(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); {
		// Leading whitespace joins the next token.
		j := i
		for j < len(s) {
			r, n := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsSpace(r) {
				break
			}
			j += n
		}
		if j == len(s) {
			out = append(out, s[start:])
			return out
		}
		r, n := utf8.DecodeRuneInString(s[j:])
		end := j + n
		switch {
		case unicode.IsLetter(r):
			end = scanRun(s, j, unicode.IsLetter, maxLetterRun)
		case unicode.IsDigit(r):
			end = scanRun(s, j, unicode.IsDigit, maxDigitRun)
		}
		out = append(out, s[start:end])
		start, i = end, end
	}
	return out
}

func scanRun(s string, i int, class func(rune) bool, max int) int {
	count := 0
	for i < len(s) && count < max {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !class(r) {
			break
		}
		i += n
		count++
	}
	return i
}

// CountTokens is len(Tokenize(s)) without building the slice.
func CountTokens(s string) int {
	n := 0
	for i := 0; i < len(s); {
		j := i
		for j < len(s) {
			r, w := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsSpace(r) {
				break
			}
			j += w
		}
		n++
		if j == len(s) {
			return n
		}
		r, w := utf8.DecodeRuneInString(s[j:])
		switch {
		case unicode.IsLetter(r):
			i = scanRun(s, j, unicode.IsLetter, maxLetterRun)
		case unicode.IsDigit(r):
			i = scanRun(s, j, unicode.IsDigit, maxDigitRun)
		default:
			i = j + w
		}
	}
	return n
}

// CountChat counts a chat prompt's tokens (see the package's accounting).
func CountChat(msgs []task.Message) int {
	n := tokensReplyPriming
	for _, m := range msgs {
		n += tokensPerMessage + CountTokens(m.Role) + CountTokens(m.Content)
		if m.Name != "" {
			n += CountTokens(m.Name)
		}
	}
	return n
}
