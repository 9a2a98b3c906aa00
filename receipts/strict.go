package receipts

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// Strict parsing.
//
// A receipt is read by billing systems in many languages. If two parsers
// can read one document as two different receipts, a receipt that verifies
// in Go can bill something else elsewhere: encoding/json matches keys
// case-insensitively and lets the last duplicate win, so
// {"prompt_tokens":999999,"PROMPT_TOKENS":21} verifies as 21 tokens in Go
// while jq, JavaScript and Python read 999,999. ParseReceipt therefore
// accepts exactly one document per receipt value (up to whitespace and the
// order of object members): the one this package writes.
//
// How: the input is first read as a generic JSON tree with encoding/json's
// Decoder.Token (refusing duplicate keys at every depth, trailing data,
// invalid UTF-8 and escaped lone surrogates, which encoding/json silently
// turns into U+FFFD where other parsers keep them). It is then decoded into
// the struct, the struct is re-encoded with encoding/json, and the two
// trees must be equal: the same keys, exact case, no key missing or extra,
// every number the same literal and every string the same value. That one
// comparison refuses case-variant and unknown keys, nulls, exponents,
// leading zeros, "-0", a field left out, an omitted-when-empty field
// written empty, a time with a zone or trailing zeros, and base64 that
// decodes but re-encodes differently. What the struct cannot see (a hex
// string is just a string to it) is checked by CheckEncoding: lowercase
// 64-digit hex digests, field elements as 0x + 64 lowercase hex digits
// below r, times in UTC, canonical padded standard base64.
//
// A hand tokenizer over encoding/json was chosen over
// github.com/go-json-experiment/json (strict by default): it adds no
// dependency, and the re-encoding comparison is needed anyway to define
// "canonical" as "what the writer writes", which a stricter decoder alone
// would not give (it would still accept "+01:00" times or "1.0").

// ErrEncoding is returned (wrapped, with the offending field) for receipt
// or root history JSON that is not in its one canonical form.
var ErrEncoding = errors.New("not canonical JSON")

// MaxReceiptBytes bounds one receipt document.
const MaxReceiptBytes = 1 << 20

// maxJSONDepth bounds nesting in a strictly parsed document.
const maxJSONDepth = 32

// ParseReceipt parses one receipt document strictly (see above) and checks
// its field encodings (CheckEncoding). It is how a receipt from outside
// enters any verifier; Verify re-checks the field encodings of a Receipt
// built any other way, but only ParseReceipt sees the raw keys.
func ParseReceipt(b []byte) (*Receipt, error) {
	if len(b) > MaxReceiptBytes {
		return nil, fmt.Errorf("%w: receipt of %d bytes exceeds %d", ErrEncoding, len(b), MaxReceiptBytes)
	}
	var r Receipt
	if err := DecodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	if err := r.CheckEncoding(); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeStrict decodes the JSON document b into v (a pointer to a struct
// with json tags) and refuses any document that is not exactly what
// json.Marshal(v) writes, up to whitespace, member order and string escapes.
func DecodeStrict(b []byte, v any) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: invalid UTF-8", ErrEncoding)
	}
	if err := checkSurrogates(b); err != nil {
		return err
	}
	in, err := readTree(b)
	if err != nil {
		return err
	}
	if in.kind != '{' {
		return fmt.Errorf("%w: want a JSON object", ErrEncoding)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrEncoding, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEncoding, err) // e.g. a time outside years 0–9999
	}
	canon, err := readTree(out)
	if err != nil {
		return err // cannot happen: encoding/json wrote it
	}
	return diffTree("", in, canon)
}

// jsonNode is a parsed JSON value: kind is '{', '[', 's' (string), 'n'
// (number, text is its literal), 'b' (bool) or 'z' (null).
type jsonNode struct {
	kind byte
	text string
	obj  map[string]*jsonNode
	arr  []*jsonNode
}

// readTree parses one JSON document, refusing duplicate keys and trailing
// data.
func readTree(b []byte) (*jsonNode, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := readNode(dec, "", 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrEncoding)
	}
	return n, nil
}

func readNode(dec *json.Decoder, path string, depth int) (*jsonNode, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrEncoding, maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrEncoding, orRoot(path), err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &jsonNode{kind: '{', obj: map[string]*jsonNode{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("%w: %s: %w", ErrEncoding, orRoot(path), err)
				}
				k := kt.(string) // the decoder only yields string keys
				kp := joinPath(path, k)
				if _, dup := n.obj[k]; dup {
					return nil, fmt.Errorf("%w: duplicate key %q", ErrEncoding, kp)
				}
				v, err := readNode(dec, kp, depth+1)
				if err != nil {
					return nil, err
				}
				n.obj[k] = v
			}
			return n, closeToken(dec, path)
		case '[':
			n := &jsonNode{kind: '['}
			for i := 0; dec.More(); i++ {
				v, err := readNode(dec, fmt.Sprintf("%s[%d]", path, i), depth+1)
				if err != nil {
					return nil, err
				}
				n.arr = append(n.arr, v)
			}
			return n, closeToken(dec, path)
		}
	case string:
		return &jsonNode{kind: 's', text: t}, nil
	case json.Number:
		return &jsonNode{kind: 'n', text: string(t)}, nil
	case bool:
		return &jsonNode{kind: 'b', text: strconv.FormatBool(t)}, nil
	case nil:
		return &jsonNode{kind: 'z'}, nil
	}
	return nil, fmt.Errorf("%w: %s: unexpected token %v", ErrEncoding, orRoot(path), tok)
}

func closeToken(dec *json.Decoder, path string) error {
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrEncoding, orRoot(path), err)
	}
	return nil
}

// diffTree reports the first difference between the input and its
// canonical re-encoding.
func diffTree(path string, in, canon *jsonNode) error {
	if in.kind != canon.kind {
		return fmt.Errorf("%w: %s: %s where the canonical form has %s", ErrEncoding, orRoot(path), kindName(in), kindName(canon))
	}
	switch in.kind {
	case '{':
		for _, k := range sortedKeys(in.obj) {
			c, ok := canon.obj[k]
			if !ok {
				if ck := caseMatch(canon.obj, k); ck != "" {
					return fmt.Errorf("%w: key %q is not %q (keys are exact-case)", ErrEncoding, joinPath(path, k), ck)
				}
				if in.obj[k].kind == 'z' || isEmpty(in.obj[k]) {
					return fmt.Errorf("%w: key %q: an empty value is written by leaving the key out", ErrEncoding, joinPath(path, k))
				}
				return fmt.Errorf("%w: unknown key %q", ErrEncoding, joinPath(path, k))
			}
			if err := diffTree(joinPath(path, k), in.obj[k], c); err != nil {
				return err
			}
		}
		for _, k := range sortedKeys(canon.obj) {
			if _, ok := in.obj[k]; !ok {
				return fmt.Errorf("%w: key %q is missing", ErrEncoding, joinPath(path, k))
			}
		}
	case '[':
		if len(in.arr) != len(canon.arr) {
			return fmt.Errorf("%w: %s: %d items, canonical form has %d", ErrEncoding, orRoot(path), len(in.arr), len(canon.arr))
		}
		for i := range in.arr {
			if err := diffTree(fmt.Sprintf("%s[%d]", path, i), in.arr[i], canon.arr[i]); err != nil {
				return err
			}
		}
	default:
		if in.text != canon.text {
			return fmt.Errorf("%w: %s: %s is not in canonical form (%s)", ErrEncoding, orRoot(path), quoteNode(in), quoteNode(canon))
		}
	}
	return nil
}

func kindName(n *jsonNode) string {
	switch n.kind {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 's':
		return "a string"
	case 'n':
		return "a number"
	case 'b':
		return "a boolean"
	}
	return "null"
}

func quoteNode(n *jsonNode) string {
	if n.kind == 's' {
		return strconv.Quote(n.text)
	}
	return n.text
}

func isEmpty(n *jsonNode) bool {
	switch n.kind {
	case 's':
		return n.text == ""
	case 'n':
		return n.text == "0"
	case 'b':
		return n.text == "false"
	case '[':
		return len(n.arr) == 0
	}
	return false
}

func caseMatch(m map[string]*jsonNode, k string) string {
	for ck := range m {
		if strings.EqualFold(ck, k) {
			return ck
		}
	}
	return ""
}

func sortedKeys(m map[string]*jsonNode) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func orRoot(path string) string {
	if path == "" {
		return "document"
	}
	return path
}

// checkSurrogates refuses \u escapes of UTF-16 surrogates that are not a
// high surrogate followed by a low one. In valid JSON a backslash only
// appears inside strings, so a byte scan suffices (invalid JSON fails
// later anyway).
func checkSurrogates(b []byte) error {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] != 'u' {
			i++ // skip the escaped character (it may be a backslash)
			continue
		}
		c, ok := hex4(b, i+2)
		if !ok {
			continue // invalid JSON: the decoder reports it
		}
		switch {
		case c >= 0xd800 && c < 0xdc00:
			if i+11 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
				if lo, ok := hex4(b, i+8); ok && lo >= 0xdc00 && lo < 0xe000 {
					i += 11
					continue
				}
			}
			return fmt.Errorf("%w: unpaired UTF-16 surrogate escape at byte %d", ErrEncoding, i)
		case c >= 0xdc00 && c < 0xe000:
			return fmt.Errorf("%w: unpaired UTF-16 surrogate escape at byte %d", ErrEncoding, i)
		}
		i += 5
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[at:at+4]), 16, 16)
	return rune(v), err == nil
}

// Canonical value encodings.

// CheckDigest checks a SHA-256 digest written as 64 lowercase hex digits.
func CheckDigest(s string) error {
	if len(s) != 64 || !lowerHex(s) {
		return fmt.Errorf("%w: digest %q: want 64 lowercase hex digits", ErrEncoding, short(s))
	}
	return nil
}

// CheckElement checks a field element written as 0x and 64 lowercase hex
// digits (what ElementHex writes), below r.
func CheckElement(s string) error {
	if len(s) != 66 || s[:2] != "0x" || !lowerHex(s[2:]) {
		return fmt.Errorf("%w: field element %q: want 0x and 64 lowercase hex digits", ErrEncoding, short(s))
	}
	if _, err := ParseElement(s); err != nil {
		return fmt.Errorf("%w: %w", ErrEncoding, err)
	}
	return nil
}

// ParseCanonicalElement is ParseElement for the canonical form only.
func ParseCanonicalElement(s string) (fr.Element, error) {
	if err := CheckElement(s); err != nil {
		return fr.Element{}, err
	}
	return ParseElement(s)
}

// CheckBase64 checks standard, padded base64 that re-encodes to itself.
func CheckBase64(s string) error {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return fmt.Errorf("%w: base64 %q: want standard padded base64", ErrEncoding, short(s))
	}
	return nil
}

// CheckUTC checks that t is in UTC (written with a "Z").
func CheckUTC(t time.Time) error {
	if _, off := t.Zone(); off != 0 {
		return fmt.Errorf("%w: time %s is not in UTC", ErrEncoding, t.Format(time.RFC3339Nano))
	}
	return nil
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func short(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// CheckEncoding checks every field that has one canonical text form:
// digests, field elements, base64, UTC times, the circuit ID and, for v2,
// the batch time. Empty strings stand for absent values (a pending or void
// receipt has no batch; Verify requires what a proven one must have).
func (r *Receipt) CheckEncoding() error {
	field := func(name string, err error) error {
		if err != nil {
			return fmt.Errorf("receipt %s: %w", name, err)
		}
		return nil
	}
	for _, f := range []struct{ name, v string }{
		{"request_digest", r.RequestDigest}, {"response_digest", r.ResponseDigest}, {"model_digest", r.ModelDigest},
	} {
		if f.v != "" {
			if err := field(f.name, CheckDigest(f.v)); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct{ name, v string }{
		{"worker_id", r.WorkerID}, {"model_version", r.ModelVersion}, {"leaf", r.Leaf},
	} {
		if f.v != "" {
			if err := field(f.name, CheckElement(f.v)); err != nil {
				return err
			}
		}
	}
	if err := field("time", CheckUTC(r.Time)); err != nil {
		return err
	}
	b := r.Batch
	if b == nil {
		return nil
	}
	if b.Circuit != CircuitV1 && b.Circuit != CircuitV2 {
		return field("batch.circuit", fmt.Errorf("%w: unknown circuit %q", ErrEncoding, b.Circuit))
	}
	for i, s := range b.Path {
		if err := field(fmt.Sprintf("batch.path[%d]", i), CheckElement(s)); err != nil {
			return err
		}
	}
	p := &b.Public
	for _, f := range []struct{ name, v string }{
		{"root", p.Root}, {"model_version", p.ModelVersion}, {"registry_root", p.RegistryRoot}, {"worker_id", p.WorkerID},
	} {
		if err := field("batch.public."+f.name, CheckElement(f.v)); err != nil {
			return err
		}
	}
	switch {
	case b.Circuit == CircuitV2 && p.Time == nil:
		return field("batch.public.time", fmt.Errorf("%w: a %s batch must carry its batch time", ErrEncoding, CircuitV2))
	case b.Circuit == CircuitV1 && p.Time != nil:
		return field("batch.public.time", fmt.Errorf("%w: a %s batch has no batch time", ErrEncoding, CircuitV1))
	case p.Time != nil:
		if err := field("batch.public.time", CheckUTC(*p.Time)); err != nil {
			return err
		}
	}
	if err := field("batch.signature", CheckBase64(b.Signature)); err != nil {
		return err
	}
	if err := field("batch.proof", CheckBase64(b.Proof)); err != nil {
		return err
	}
	if b.Calldata != "" {
		h, ok := strings.CutPrefix(b.Calldata, "0x")
		switch {
		case b.Circuit != CircuitV2:
			return field("batch.calldata", fmt.Errorf("%w: %w: only a %s batch has calldata", ErrEncoding, ErrCalldata, CircuitV2))
		case !ok || len(h)%2 != 0 || !lowerHex(h):
			return field("batch.calldata", fmt.Errorf("%w: %w: want 0x and lowercase hex", ErrEncoding, ErrCalldata))
		}
	}
	if b.VerifyingKeyID == "" || strings.ContainsFunc(b.VerifyingKeyID, func(c rune) bool { return c <= ' ' || c > '~' }) {
		return field("batch.vk_id", fmt.Errorf("%w: %q", ErrEncoding, short(b.VerifyingKeyID)))
	}
	return field("batch.proven_at", CheckUTC(b.ProvenAt))
}
