package llama

import (
	"strings"
	"unicode/utf8"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// stopWriter streams generated text while watching for stop sequences. Text
// that could still become a stop sequence, and an incomplete UTF-8 sequence
// at the end, is held back until the next piece decides it, so a stop
// sequence is never partly emitted.
type stopWriter struct {
	stops   []string
	emit    func(task.Delta) error
	pending strings.Builder
	tokens  int // tokens whose text is pending
}

func newStopWriter(stops []string, emit func(task.Delta) error) *stopWriter {
	return &stopWriter{stops: stops, emit: emit}
}

// write adds one token's text. It returns errStopped once a stop sequence
// matched (the text before it has been emitted), or emit's error.
func (w *stopWriter) write(piece string) error {
	w.pending.WriteString(piece)
	w.tokens++
	text := w.pending.String()
	if i := firstStop(text, w.stops); i >= 0 {
		if err := w.send(text[:i]); err != nil {
			return err
		}
		w.pending.Reset()
		return errStopped
	}
	keep := max(holdForStop(text, w.stops), holdForUTF8(text))
	if keep == len(text) {
		return nil
	}
	if err := w.send(text[:len(text)-keep]); err != nil {
		return err
	}
	w.pending.Reset()
	w.pending.WriteString(text[len(text)-keep:])
	return nil
}

// flush emits whatever is held back; generation ended without a stop match.
func (w *stopWriter) flush() error {
	text := w.pending.String()
	w.pending.Reset()
	return w.send(text)
}

func (w *stopWriter) send(text string) error {
	if text == "" {
		return nil
	}
	n := w.tokens
	w.tokens = 0
	return w.emit(task.Delta{Text: text, Tokens: n})
}

// firstStop is the index of the earliest stop-sequence match in text, or -1.
func firstStop(text string, stops []string) int {
	best := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// holdForStop is the length of the longest suffix of text that is a proper
// prefix of some stop sequence.
func holdForStop(text string, stops []string) int {
	hold := 0
	for _, s := range stops {
		for n := min(len(s)-1, len(text)); n > hold; n-- {
			if strings.HasSuffix(text, s[:n]) {
				hold = n
				break
			}
		}
	}
	return hold
}

// holdForUTF8 is the length of an incomplete UTF-8 sequence ending text.
func holdForUTF8(text string) int {
	for n := 1; n <= min(utf8.UTFMax-1, len(text)); n++ {
		c := text[len(text)-n]
		if c&0xC0 == 0x80 { // continuation byte: look further back
			continue
		}
		if c >= 0xC0 && !utf8.FullRuneInString(text[len(text)-n:]) {
			return n
		}
		return 0
	}
	return 0
}
