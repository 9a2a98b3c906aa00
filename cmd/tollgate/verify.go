package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/receipts"
)

func init() {
	register(commands, "verify", "verify receipts offline against pinned keys and registry roots (JSON files, JSONL exports, - for stdin)", runVerify)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// verifyOut is where `tollgate verify` reports (tests capture it).
var verifyOut io.Writer = os.Stdout

// maxReceiptFile bounds one input (a JSONL export of many receipts).
const maxReceiptFile = 1 << 30

const verifyUsage = `usage: tollgate verify [flags] FILE... (- for stdin)

Trust comes from pins, not from the receipts:
  verifying keys   --vk FILE (the key file itself) or --vk-hash SHA256 (of a
                   key file fetched with -gateway); any other key is refused
  registry roots   --roots FILE (a signed root history, from 'tollgate registry
                   export' or GET /v1/zk/registry), checked against
                   --operator-key FILE when given; or --operator-key FILE with
                   -gateway URL to fetch the history and check it
  v1 receipts      --registry-root HEX (v1 proofs are unaudited)

-gateway URL alone trusts the gateway for whatever is not pinned and says so.
Development keys are refused unless --allow-dev-keys.

`

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	var vkFiles, vkHashes, v1Roots stringList
	fs.Var(&vkFiles, "vk", "pinned verifying key file (repeatable)")
	fs.Var(&vkHashes, "vk-hash", "SHA-256 (hex) of a verifying key file to accept from -gateway (repeatable)")
	fs.Var(&v1Roots, "registry-root", "trusted v1 model registry root, 0x-hex (repeatable; v1 receipts only)")
	rootsFile := fs.String("roots", "", "pinned registry root history file (signed by the operator)")
	operatorFile := fs.String("operator-key", "", "pinned operator public key file (tollgate-operator-public-key)")
	gateway := fs.String("gateway", "", "gateway base URL to fetch what is not pinned from (it is then trusted for that)")
	allowDev := fs.Bool("allow-dev-keys", false, "accept verifying keys from a single-party development set-up")
	calldata := fs.Bool("calldata", false, "after each verified receipt, print its batch's on-chain calldata (TollgateBatchVerifier.verifyBatch)")
	requestFile := fs.String("request", "", "your own OpenAI request body (JSON): check it is the receipt's request (verify_digests.go)")
	responseFile := fs.String("response", "", "the response body you received (JSON, or the raw SSE stream): check it is the receipt's response")
	disputeFile := fs.String("dispute", "", "audit dispute evidence (GET /v1/admin/disputes, or one dispute): check each against its audited receipt, which must be among FILE and verify (verify_dispute.go)")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, verifyUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no receipt files")
	}
	if *requestFile != "" || *responseFile != "" {
		if err := verifyDigests(verifyOut, *requestFile, *responseFile, fs.Args()); err != nil {
			return err
		}
		// Digests only when nothing at all is pinned: a pin (a --vk alone,
		// say) asks for the proof, which then needs the rest of the trust.
		if len(vkFiles) == 0 && len(vkHashes) == 0 && len(v1Roots) == 0 && *rootsFile == "" && *operatorFile == "" && *gateway == "" {
			fmt.Fprintln(verifyOut, "proof not checked: pin registry roots and a verifying key (or -gateway) to verify the receipt itself")
			return nil
		}
	}
	v := &verifier{gateway: strings.TrimSuffix(*gateway, "/"), client: &http.Client{Timeout: 30 * time.Second}, out: verifyOut,
		trust: receipts.Trust{Keys: map[string]*receipts.VerifyingKey{}, AllowDevKeys: *allowDev}, hashes: map[string]bool{}}
	if err := v.pin(ctx, vkFiles, vkHashes, v1Roots, *rootsFile, *operatorFile); err != nil {
		return err
	}
	var disputes []audit.Dispute
	if *disputeFile != "" {
		var err error
		if disputes, err = readDisputes(*disputeFile); err != nil {
			return fmt.Errorf("--dispute %s: %w", *disputeFile, err)
		}
	}
	verified := map[string]*receipts.Receipt{}
	failed, total := 0, 0
	for _, name := range fs.Args() {
		err := eachReceipt(name, func(raw json.RawMessage) {
			total++
			r, ok := v.check(ctx, raw)
			switch {
			case !ok:
				failed++
			case *calldata:
				printCalldata(v.out, raw)
			}
			if ok && disputes != nil {
				verified[r.ID] = r
			}
		})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	fmt.Fprintf(v.out, "%d receipts, %d OK, %d failed (%d duplicates)\n", total, total-failed, failed, v.duplicates)
	if total == 0 {
		return errors.New("no receipts in the input")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d receipts failed verification", failed, total)
	}
	bad := 0
	for i := range disputes {
		d := &disputes[i]
		fmt.Fprintf(v.out, "dispute %s\tworker=%s\treceipt=%s\tcomparator=%s\t", printable(d.ID), printable(d.WorkerID), printable(d.ReceiptID), printable(d.Comparator))
		err := errors.New("its receipt is not among the verified receipts")
		if r := verified[d.ReceiptID]; r != nil {
			err = checkDispute(d, r)
		}
		if err != nil {
			bad++
			fmt.Fprintf(v.out, "FAIL: %s\n", printable(err.Error()))
			continue
		}
		fmt.Fprintln(v.out, "evidence consistent with the proven receipt")
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d disputes failed their check", bad, len(disputes))
	}
	return nil
}

// eachReceipt reads a file of receipts: one JSON receipt, a JSON-lines
// export, or an export page {"object":"list","data":[...],...}. Each
// receipt's bytes are passed on as they are, for strict parsing.
func eachReceipt(name string, fn func(json.RawMessage)) error {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(r, maxReceiptFile)))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		// A page only in its canonical form (exact keys, none twice);
		// anything else is read as a receipt, and refused if it is not one.
		var page struct {
			Object  string            `json:"object"`
			Data    []json.RawMessage `json:"data"`
			HasMore bool              `json:"has_more"`
			Next    string            `json:"next,omitempty"`
		}
		if receipts.DecodeStrict(raw, &page) == nil && page.Object == "list" {
			for _, d := range page.Data {
				fn(d)
			}
			continue
		}
		fn(raw)
	}
}

type verifier struct {
	trust   receipts.Trust
	hashes  map[string]bool // pinned vk file hashes (--vk-hash)
	gateway string
	client  *http.Client
	out     io.Writer

	seenRequests map[string]string // request ID → receipt ID, of receipts that verified
	seenLeaves   map[string]string // leaf → receipt ID
	duplicates   int
}

// pin sets up the trust from the flags, fetching from the gateway only what
// is not pinned, and prints what it trusts.
func (v *verifier) pin(ctx context.Context, vkFiles, vkHashes, v1Roots []string, rootsFile, operatorFile string) error {
	for _, f := range vkFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		vk, err := receipts.ParseVerifyingKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if receipts.IsDevKey(vk.Header) && !v.trust.AllowDevKeys {
			return fmt.Errorf("%s: %w (ceremony %q); pass --allow-dev-keys to accept it", f, receipts.ErrDevKey, vk.Header.Ceremony)
		}
		v.trust.Keys[vk.ID] = vk
		fmt.Fprintf(v.out, "trust: verifying key %s (%s, ceremony %q) pinned by file %s, sha256 %s\n", vk.ID, vk.Header.Circuit, vk.Header.Ceremony, f, fileHash(b))
	}
	for _, h := range vkHashes {
		if receipts.CheckDigest(h) != nil {
			return fmt.Errorf("--vk-hash %q: want 64 lowercase hex digits", h)
		}
		v.hashes[h] = true
	}
	for _, r := range v1Roots {
		e, err := receipts.ParseCanonicalElement(r)
		if err != nil {
			return fmt.Errorf("--registry-root: %w", err)
		}
		v.trust.V1Roots = append(v.trust.V1Roots, e)
		fmt.Fprintf(v.out, "trust: v1 registry root %s pinned\n", r)
	}
	var operator ed25519.PublicKey
	if operatorFile != "" {
		b, err := os.ReadFile(operatorFile)
		if err != nil {
			return err
		}
		if operator, err = receipts.ReadOperatorPublicKey(b); err != nil {
			return fmt.Errorf("%s: %w", operatorFile, err)
		}
		fmt.Fprintf(v.out, "trust: operator key %s pinned by file %s\n", hex.EncodeToString(operator), operatorFile)
	}
	var histBytes []byte
	switch {
	case rootsFile != "":
		b, err := os.ReadFile(rootsFile)
		if err != nil {
			return err
		}
		histBytes = b
	case v.gateway != "":
		b, err := v.get(ctx, "/v1/zk/registry")
		if err != nil && !errors.Is(err, errNotFound) {
			return fmt.Errorf("registry root history: %w", err)
		}
		histBytes = b
	}
	if histBytes != nil {
		if err := v.pinHistory(histBytes, operator, rootsFile); err != nil {
			return err
		}
	}
	if v.gateway != "" && len(v1Roots) == 0 {
		if err := v.fetchV1Roots(ctx); err != nil {
			return err
		}
	}
	switch {
	case v.trust.Roots == nil && len(v.trust.V1Roots) == 0:
		return errors.New("no registry roots to trust: need --roots FILE, or -gateway URL (with --operator-key FILE to pin its history), or --registry-root HEX for v1 receipts")
	case len(v.trust.Keys) == 0 && v.gateway == "":
		return errors.New("no verifying key to trust: need --vk FILE, or --vk-hash SHA256 with -gateway URL")
	}
	return nil
}

func (v *verifier) pinHistory(b []byte, operator ed25519.PublicKey, file string) error {
	h, err := receipts.ParseRootHistory(b)
	if err != nil {
		return err
	}
	roots, err := h.Verify(operator) // nil: the key the history names
	if err != nil {
		return err
	}
	v.trust.Roots = roots
	from := "pinned file " + file
	if file == "" {
		from = "gateway " + v.gateway
	}
	keyNote := "the pinned operator key"
	if operator == nil {
		keyNote = "operator key " + h.OperatorKey + ", NOT pinned: "
		if file == "" {
			keyNote += "trusted because the gateway says so"
		} else {
			keyNote += "trusted because the file is pinned"
		}
	}
	fmt.Fprintf(v.out, "trust: registry root history from %s: %d entries, speaks up to %s, signed by %s\n",
		from, roots.Len(), roots.AsOf().Format(time.RFC3339Nano), keyNote)
	return nil
}

var errNotFound = errors.New("not found")

func (v *verifier) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.gateway+path, nil)
	if err != nil {
		return nil, err
	}
	res, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	switch res.StatusCode {
	case http.StatusOK:
		return b, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %w", path, errNotFound)
	}
	return nil, fmt.Errorf("GET %s: %s", path, res.Status)
}

// fetchV1Roots trusts the gateway's legacy v1 model registry roots.
func (v *verifier) fetchV1Roots(ctx context.Context) error {
	b, err := v.get(ctx, "/v1/zk/keys/registry")
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("v1 registry roots: %w", err)
	}
	var reg struct {
		Roots []string `json:"roots"`
	}
	if err := json.Unmarshal(b, &reg); err != nil {
		return fmt.Errorf("v1 registry roots: %w", err)
	}
	for _, r := range reg.Roots {
		e, err := receipts.ParseElement(r)
		if err != nil {
			return fmt.Errorf("v1 registry roots: %w", err)
		}
		v.trust.V1Roots = append(v.trust.V1Roots, e)
	}
	if len(reg.Roots) > 0 {
		fmt.Fprintf(v.out, "trust: %d v1 registry roots from gateway %s, NOT pinned: trusted because the gateway says so\n", len(reg.Roots), v.gateway)
	}
	return nil
}

// key makes sure the receipt's key is in the trust: pinned by file, or
// fetched from the gateway and accepted if its hash is pinned (or, with no
// hash pinned, because the gateway says so, which it prints).
func (v *verifier) key(ctx context.Context, id string) error {
	if _, ok := v.trust.Keys[id]; ok || v.gateway == "" {
		return nil // Trust.Verify refuses an unpinned key
	}
	b, err := v.get(ctx, "/v1/zk/keys/"+url.PathEscape(id))
	if err != nil {
		return fmt.Errorf("%w: %w", receipts.ErrVerifyingKey, err)
	}
	vk, err := receipts.ParseVerifyingKey(b)
	if err != nil {
		return fmt.Errorf("%w: %w", receipts.ErrVerifyingKey, err)
	}
	if vk.ID != id {
		return fmt.Errorf("%w: the gateway served key %s for %s", receipts.ErrVerifyingKey, vk.ID, id)
	}
	sum := fileHash(b)
	switch {
	case v.hashes[sum]:
		fmt.Fprintf(v.out, "trust: verifying key %s from gateway %s, sha256 %s pinned by --vk-hash\n", id, v.gateway, sum)
	case len(v.hashes) > 0 || len(v.trust.Keys) > 0:
		return fmt.Errorf("%w: gateway key %s (sha256 %s) is not pinned", receipts.ErrVerifyingKey, id, sum)
	default:
		fmt.Fprintf(v.out, "trust: verifying key %s (ceremony %q) from gateway %s, sha256 %s, NOT pinned: trusted because the gateway says so\n",
			id, vk.Header.Ceremony, v.gateway, sum)
	}
	v.trust.Keys[id] = vk
	return nil
}

func fileHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// check verifies one receipt and prints its line; it reports success.
func (v *verifier) check(ctx context.Context, raw json.RawMessage) (*receipts.Receipt, bool) {
	r, err := receipts.ParseReceipt(raw)
	if err != nil {
		fmt.Fprintf(v.out, "?\tFAIL: malformed receipt: %s\n", printable(err.Error()))
		return nil, false
	}
	digest := r.ModelDigest
	if len(digest) > 12 {
		digest = digest[:12]
	}
	circuit := ""
	if r.Batch != nil {
		circuit = "\tcircuit " + r.Batch.Circuit
		if r.Batch.Circuit == receipts.CircuitV1 {
			circuit += " (unaudited)"
		}
	}
	var keyErr error
	if r.Batch != nil {
		keyErr = v.key(ctx, r.Batch.VerifyingKeyID) // prints what it trusts, before the receipt's line
	}
	audit := cmp.Or(r.Audit, "none") // the gateway's spot re-execution; not part of the proof
	fmt.Fprintf(v.out, "%s\tmodel=%s@%s\tworker=%s\ttokens=%d+%d%s\taudit=%s\t", printable(r.ID), printable(r.Model), digest, r.WorkerID, r.PromptTokens, r.CompletionTokens, circuit, printable(audit))
	err = keyErr
	if err == nil {
		err = v.verify(r)
	}
	if err != nil {
		fmt.Fprintf(v.out, "FAIL: %s\n", printable(err.Error()))
		return nil, false
	}
	fmt.Fprintln(v.out, "OK")
	return r, true
}

// printable is s as it may appear in the report: itself when every
// character is graphic, else quoted with escapes. A receipt's free text (its
// ID, model name, or an error quoting them) must not start a line or field
// of its own: a pipeline reading the report line by line would take a
// forged receipt's embedded "...\tOK\n" for a verified one.
func printable(s string) string {
	for _, c := range s {
		if !strconv.IsGraphic(c) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

func (v *verifier) verify(r *receipts.Receipt) error {
	if err := v.trust.Verify(r); err != nil {
		return err
	}
	return v.unique(r)
}

// unique flags a verified receipt whose request or leaf a receipt verified
// before it already carries: billing either would bill the request twice.
func (v *verifier) unique(r *receipts.Receipt) error {
	if v.seenRequests == nil {
		v.seenRequests, v.seenLeaves = map[string]string{}, map[string]string{}
	}
	_, _, leaf, err := r.LeafFields()
	if err != nil {
		return err
	}
	lh := receipts.ElementHex(leaf)
	if first, ok := v.seenRequests[r.RequestID]; ok {
		v.duplicates++
		return fmt.Errorf("duplicate: request ID %q is also in receipt %s", r.RequestID, first)
	}
	if first, ok := v.seenLeaves[lh]; ok {
		v.duplicates++
		return fmt.Errorf("duplicate: leaf %s is also in receipt %s", lh, first)
	}
	v.seenRequests[r.RequestID], v.seenLeaves[lh] = r.ID, r.ID
	return nil
}
