package llama

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Special token IDs of llama2.c's sentencepiece vocabularies.
const (
	tokenBOS = 1
	tokenEOS = 2
	// byteTokenOffset is the ID of the byte-fallback token <0x00>.
	byteTokenOffset = 3
)

// maxPieceLen bounds a single vocabulary entry read from a tokenizer file.
const maxPieceLen = 1 << 16

// Tokenizer is a llama2.c tokenizer (tok*.bin): pieces with merge scores.
type Tokenizer struct {
	pieces   []string
	scores   []float32
	lookup   map[string]int // piece → ID (the lowest ID if a piece repeats)
	bytePiec [256]string    // raw byte b as a one-byte string
	maxLen   int
}

// parseTokenizer reads a tok*.bin file holding vocabSize pieces: int32
// max_token_length, then per piece float32 score, int32 length, bytes.
// Every length is checked against the remaining input; trailing bytes are an
// error, so a tokenizer for a different vocabulary size is caught.
func parseTokenizer(data []byte, vocabSize int) (*Tokenizer, error) {
	if vocabSize < 3 || vocabSize > maxDim { // unk, BOS and EOS at least
		return nil, fmt.Errorf("tokenizer: vocabulary size %d out of range", vocabSize)
	}
	if len(data) < 4 {
		return nil, fmt.Errorf("tokenizer: truncated: %d bytes, no max_token_length", len(data))
	}
	maxLen := int(int32(binary.LittleEndian.Uint32(data)))
	if maxLen <= 0 || maxLen > maxPieceLen {
		return nil, fmt.Errorf("tokenizer: max_token_length %d out of range [1, %d]", maxLen, maxPieceLen)
	}
	t := &Tokenizer{
		pieces: make([]string, vocabSize),
		scores: make([]float32, vocabSize),
		lookup: make(map[string]int, vocabSize),
		maxLen: maxLen,
	}
	off := 4
	for i := 0; i < vocabSize; i++ {
		if len(data)-off < 8 {
			return nil, fmt.Errorf("tokenizer: truncated at token %d of %d (offset %d)", i, vocabSize, off)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 || n > maxLen {
			return nil, fmt.Errorf("tokenizer: token %d has length %d, outside [0, max_token_length %d]", i, n, maxLen)
		}
		if len(data)-off < n {
			return nil, fmt.Errorf("tokenizer: truncated in token %d: needs %d bytes, %d left", i, n, len(data)-off)
		}
		if math.IsNaN(float64(score)) {
			return nil, fmt.Errorf("tokenizer: token %d has a NaN score", i)
		}
		p := string(data[off : off+n])
		off += n
		t.pieces[i], t.scores[i] = p, score
		if _, dup := t.lookup[p]; !dup {
			t.lookup[p] = i
		}
	}
	if off != len(data) {
		return nil, fmt.Errorf("tokenizer: %d trailing bytes after %d tokens", len(data)-off, vocabSize)
	}
	for b := range t.bytePiec {
		t.bytePiec[b] = string([]byte{byte(b)})
	}
	return t, nil
}

// VocabSize is the number of pieces.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// Encode tokenizes text exactly as llama2.c's encode: optional BOS, a
// dummy-prefix " " before non-empty text, one lookup per UTF-8 code point
// (at most 4 bytes) with byte fallback (ID = byte + 3), then repeated merging
// of the adjacent pair whose merged piece has the highest score (the
// leftmost on ties).
func (t *Tokenizer) Encode(text string, bos bool) []int {
	tokens := make([]int, 0, len(text)+2)
	if bos {
		tokens = append(tokens, tokenBOS)
	}
	if text != "" {
		if id, ok := t.lookup[" "]; ok {
			tokens = append(tokens, id)
		} else {
			tokens = t.appendBytes(tokens, " ")
		}
	}
	for start := 0; start < len(text); {
		// A code point is a lead byte plus up to three continuation bytes,
		// as llama2.c splits it (it does not validate UTF-8).
		end := start + 1
		for end < len(text) && text[end]&0xC0 == 0x80 && end-start < 4 {
			end++
		}
		cp := text[start:end]
		if id, ok := t.lookup[cp]; ok {
			tokens = append(tokens, id)
		} else {
			tokens = t.appendBytes(tokens, cp)
		}
		start = end
	}
	return t.merge(tokens)
}

// merge repeatedly merges the adjacent pair whose merged piece has the
// highest score (the leftmost on ties), as llama2.c does, in O(n) lookups:
// each pair's merge candidate is cached and only the neighbours of a merge
// are looked up again.
func (t *Tokenizer) merge(tokens []int) []int {
	if len(tokens) < 2 {
		return tokens
	}
	var buf []byte
	pairID := func(a, b int) int {
		buf = append(append(buf[:0], t.pieces[a]...), t.pieces[b]...)
		if id, ok := t.lookup[string(buf)]; ok {
			return id
		}
		return -1
	}
	cand := make([]int, len(tokens)-1) // cand[i]: merge of tokens[i], tokens[i+1], or -1
	for i := range cand {
		cand[i] = pairID(tokens[i], tokens[i+1])
	}
	for {
		bestScore := float32(-1e10)
		best := -1
		for i, id := range cand {
			if id >= 0 && t.scores[id] > bestScore {
				bestScore, best = t.scores[id], i
			}
		}
		if best < 0 {
			return tokens
		}
		tokens[best] = cand[best]
		tokens = append(tokens[:best+1], tokens[best+2:]...)
		cand = append(cand[:best], cand[best+1:]...)
		if best > 0 {
			cand[best-1] = pairID(tokens[best-1], tokens[best])
		}
		if best < len(cand) {
			cand[best] = pairID(tokens[best], tokens[best+1])
		}
	}
}

// appendBytes appends byte-fallback tokens for s, skipping bytes whose
// fallback ID is outside the vocabulary.
func (t *Tokenizer) appendBytes(tokens []int, s string) []int {
	for i := 0; i < len(s); i++ {
		if id := int(s[i]) + byteTokenOffset; id < len(t.pieces) {
			tokens = append(tokens, id)
		}
	}
	return tokens
}

// Decode returns the text of token after prev, as llama2.c's decode: the
// leading space of a piece that follows BOS is dropped and a piece of the form
// <0xHH> is the raw byte HH. Out-of-range IDs decode to "".
func (t *Tokenizer) Decode(prev, token int) string {
	if token < 0 || token >= len(t.pieces) {
		return ""
	}
	p := t.pieces[token]
	if prev == tokenBOS && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	if b, ok := parseBytePiece(p); ok {
		return t.bytePiec[b]
	}
	return p
}

// parseBytePiece recognizes "<0xHH>" (hex digits in either case).
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(p[3])
	lo, ok2 := hexVal(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
