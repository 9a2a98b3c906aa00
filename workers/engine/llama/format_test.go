package llama

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// buildCheckpoint serializes a tiny random-free checkpoint with the given
// header; weights are small deterministic values.
func buildCheckpoint(dim, hidden, layers, heads, kvHeads, vocab, seqLen int32) []byte {
	var b bytes.Buffer
	for _, v := range []int32{dim, hidden, layers, heads, kvHeads, vocab, seqLen} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	c, err := parseHeader(b.Bytes())
	if err != nil {
		return b.Bytes() // an invalid header: the body does not matter
	}
	for i := int64(0); i < c.floatCount(); i++ {
		binary.Write(&b, binary.LittleEndian, float32(math.Sin(float64(i)))*0.1)
	}
	return b.Bytes()
}

func TestParseCheckpoint(t *testing.T) {
	valid := buildCheckpoint(8, 12, 2, 2, 1, 10, 16)
	unshared := buildCheckpoint(8, 12, 2, 2, 1, -10, 16)
	header := func(h ...int32) []byte {
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, h)
		return b.Bytes()
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr string
		shared  bool
	}{
		{name: "valid shared classifier", data: valid, shared: true},
		{name: "valid separate classifier", data: unshared, shared: false},
		{name: "empty", data: nil, wantErr: "truncated header"},
		{name: "short header", data: valid[:20], wantErr: "truncated header"},
		{name: "truncated body", data: valid[:len(valid)-1], wantErr: "body is"},
		{name: "trailing bytes", data: append(append([]byte{}, valid...), 0, 0, 0, 0), wantErr: "body is"},
		{name: "sign of vocab wrong", data: append(header(8, 12, 2, 2, 1, -10, 16), valid[headerSize:]...), wantErr: "body is"},
		{name: "zero dim", data: header(0, 12, 2, 2, 1, 10, 16), wantErr: "dim = 0"},
		{name: "negative layers", data: header(8, 12, -2, 2, 1, 10, 16), wantErr: "n_layers = -2"},
		{name: "huge seq_len", data: header(8, 12, 2, 2, 1, 10, math.MaxInt32), wantErr: "seq_len"},
		{name: "min int vocab", data: header(8, 12, 2, 2, 1, math.MinInt32, 16), wantErr: "vocab_size"},
		{name: "dim not divisible by heads", data: header(9, 12, 2, 2, 1, 10, 16), wantErr: "not divisible"},
		{name: "heads not multiple of kv heads", data: header(12, 12, 2, 3, 2, 10, 16), wantErr: "not a multiple"},
		{name: "more kv heads than heads", data: header(8, 12, 2, 2, 4, 10, 16), wantErr: "not a multiple"},
		{name: "odd head size", data: header(6, 12, 2, 2, 1, 10, 16), wantErr: "odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w, err := parseCheckpoint(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.SharedClass != tt.shared {
				t.Errorf("SharedClass = %t, want %t", c.SharedClass, tt.shared)
			}
			if len(w.wcls) != c.VocabSize*c.Dim || len(w.rmsFinal) != c.Dim || len(w.wk) != c.NLayers*c.KVDim()*c.Dim {
				t.Errorf("weight slices have wrong sizes")
			}
			if tt.shared != (&w.wcls[0] == &w.tokenEmbedding[0]) {
				t.Errorf("classifier sharing does not follow the header")
			}
		})
	}
}

// The stories260K header as README.md describes it.
func TestParseHeaderStories260K(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(modelDir(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := parseCheckpoint(data)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Dim: 64, HiddenDim: 172, NLayers: 5, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 512, SharedClass: true}
	if diff := cmp.Diff(c, want); diff != "" {
		t.Errorf("config (-got +want):\n%s", diff)
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	valid := buildCheckpoint(8, 12, 2, 2, 1, 10, 16)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(valid[:headerSize])
	f.Add(valid[:7])
	f.Add(buildCheckpoint(8, 12, 2, 2, 1, -10, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, w, err := parseCheckpoint(data)
		if err != nil {
			return
		}
		if int64(len(data)) != headerSize+4*c.floatCount() || len(w.wcls) != c.VocabSize*c.Dim {
			t.Fatalf("accepted an inconsistent checkpoint: %+v, %d bytes", c, len(data))
		}
	})
}

// buildTokenizer serializes pieces with scores in tok*.bin format.
func buildTokenizer(maxLen int32, pieces []string, scores []float32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, maxLen)
	for i, p := range pieces {
		binary.Write(&b, binary.LittleEndian, scores[i])
		binary.Write(&b, binary.LittleEndian, int32(len(p)))
		b.WriteString(p)
	}
	return b.Bytes()
}

func TestParseTokenizer(t *testing.T) {
	pieces := []string{"<unk>", "<s>", "</s>", "a", "b", "ab"}
	scores := []float32{0, 0, 0, -1, -2, -0.5}
	valid := buildTokenizer(8, pieces, scores)
	tests := []struct {
		name    string
		data    []byte
		vocab   int
		wantErr string
	}{
		{name: "valid", data: valid, vocab: 6},
		{name: "empty", data: nil, vocab: 6, wantErr: "truncated"},
		{name: "truncated in a score", data: valid[:10], vocab: 6, wantErr: "truncated at token"},
		{name: "truncated in a piece", data: valid[:len(valid)-1], vocab: 6, wantErr: "truncated in token 5"},
		{name: "more tokens than the model", data: valid, vocab: 5, wantErr: "trailing bytes"},
		{name: "fewer tokens than the model", data: valid, vocab: 7, wantErr: "truncated at token 6"},
		{name: "bad max length", data: buildTokenizer(0, pieces, scores), vocab: 6, wantErr: "max_token_length"},
		{name: "piece longer than max", data: buildTokenizer(1, pieces, scores), vocab: 6, wantErr: "length 5"},
		{name: "negative piece length", data: append(buildTokenizer(8, pieces[:3], scores[:3]), 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff), vocab: 4, wantErr: "length -1"},
		{name: "vocabulary without BOS and EOS", data: buildTokenizer(8, pieces[:2], scores[:2]), vocab: 2, wantErr: "vocabulary size 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := parseTokenizer(tt.data, tt.vocab)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tok.pieces, pieces); diff != "" {
				t.Errorf("pieces (-got +want):\n%s", diff)
			}
		})
	}
}

func FuzzParseTokenizer(f *testing.F) {
	valid := buildTokenizer(8, []string{"<unk>", "<s>", "</s>", "a", "b", "ab"}, []float32{0, 0, 0, -1, -2, -0.5})
	f.Add(valid, 6)
	f.Add(valid[:len(valid)-2], 6)
	f.Add(valid[:4], 6)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, data []byte, vocab int) {
		tok, err := parseTokenizer(data, vocab)
		if err != nil {
			return
		}
		if tok.VocabSize() != vocab {
			t.Fatalf("vocab %d, want %d", tok.VocabSize(), vocab)
		}
		// Encoding and decoding anything must stay in range.
		for _, id := range tok.Encode("ab ba\xff\u00e9", true) {
			if id < 0 || id >= vocab {
				t.Fatalf("encoded id %d outside vocab %d", id, vocab)
			}
			_ = tok.Decode(tokenBOS, id)
		}
	})
}

func loadTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(modelDir(t), "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := parseTokenizer(data, 512)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestEncodeDecode(t *testing.T) {
	tok := loadTokenizer(t)
	tests := []struct {
		name string
		text string
		want []int // nil: only check the round trip
	}{
		{name: "empty", text: "", want: []int{1}},
		{name: "golden prompt", text: "Once upon a time, a little dog", want: []int{1, 403, 407, 261, 378, 432, 261, 376, 400, 428}},
		{name: "newline and punctuation", text: "Hi!\nBye."},
		{name: "byte fallback for unknown code points", text: "café ☕ 日本"},
		{name: "invalid utf-8", text: "a\xffb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := tok.Encode(tt.text, true)
			if tt.want != nil {
				if diff := cmp.Diff(ids, tt.want); diff != "" {
					t.Errorf("Encode (-got +want):\n%s", diff)
				}
			}
			var sb strings.Builder
			for i := 1; i < len(ids); i++ {
				sb.WriteString(tok.Decode(ids[i-1], ids[i]))
			}
			if sb.String() != tt.text {
				t.Errorf("round trip = %q, want %q", sb.String(), tt.text)
			}
		})
	}
}

func TestEncodeByteFallback(t *testing.T) {
	tok := loadTokenizer(t)
	// U+2615 is not in a 512-token vocabulary: its three bytes become
	// byte tokens, which decode to the raw bytes.
	ids := tok.Encode("☕", false)
	want := []int{tok.lookup[" "], 0xE2 + 3, 0x98 + 3, 0x95 + 3}
	if diff := cmp.Diff(ids, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	if got := tok.Decode(5, 0xE2+3); got != "\xe2" {
		t.Errorf("Decode(<0xE2>) = %q", got)
	}
}

func FuzzEncodeRoundTrip(f *testing.F) {
	for _, s := range []string{"", "Once upon a time", "café ☕", "a\xffb", "\x00"} {
		f.Add(s)
	}
	tok := loadTokenizer(f)
	f.Fuzz(func(t *testing.T, text string) {
		ids := tok.Encode(text, true)
		var sb strings.Builder
		for i := 1; i < len(ids); i++ {
			sb.WriteString(tok.Decode(ids[i-1], ids[i]))
		}
		// Exact, except that literal "<0xHH>" text may merge into a byte
		// piece, which decodes to the byte (as in llama2.c).
		if got := sb.String(); got != text && !strings.Contains(text, "<0x") {
			t.Fatalf("round trip of %q = %q", text, got)
		}
	})
}
