package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/receipts"
)

func init() {
	register(commands, "verify", "verify receipts offline (JSON files, JSONL exports, - for stdin)", runVerify)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// maxReceiptFile bounds one input (a JSONL export of many receipts).
const maxReceiptFile = 1 << 30

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	var vkFiles, roots stringList
	fs.Var(&vkFiles, "vk", "verifying key file (repeatable)")
	fs.Var(&roots, "registry-root", "trusted model registry root, 0x-hex (repeatable)")
	gateway := fs.String("gateway", "", "gateway base URL to fetch verifying keys and registry roots from")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tollgate verify [-vk FILE]... [-registry-root HEX]... [-gateway URL] FILE... (- for stdin)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no receipt files")
	}
	v := &verifier{keys: map[string]*receipts.VerifyingKey{}, gateway: strings.TrimSuffix(*gateway, "/"),
		client: &http.Client{Timeout: 30 * time.Second}}
	for _, f := range vkFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		vk, err := receipts.ParseVerifyingKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		v.keys[vk.ID] = vk
	}
	for _, r := range roots {
		e, err := receipts.ParseElement(r)
		if err != nil {
			return fmt.Errorf("-registry-root: %w", err)
		}
		v.roots = append(v.roots, e)
	}
	if len(v.roots) == 0 {
		if v.gateway == "" {
			return errors.New("need -registry-root or -gateway")
		}
		if err := v.fetchRoots(ctx); err != nil {
			return err
		}
	}
	failed, total := 0, 0
	for _, name := range fs.Args() {
		err := eachReceipt(name, func(raw json.RawMessage) {
			total++
			if !v.check(ctx, os.Stdout, raw) {
				failed++
			}
		})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stdout, "%d receipts, %d OK, %d failed\n", total, total-failed, failed)
	if total == 0 {
		return errors.New("no receipts in the input")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d receipts failed verification", failed, total)
	}
	return nil
}

// eachReceipt reads a file of receipts: one JSON receipt, a JSON-lines
// export, or an export page {"data":[...]}.
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
		var page struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal(raw, &page) == nil && page.Data != nil {
			for _, d := range page.Data {
				fn(d)
			}
			continue
		}
		fn(raw)
	}
}

type verifier struct {
	keys    map[string]*receipts.VerifyingKey
	roots   []fr.Element
	gateway string
	client  *http.Client
	dups    receipts.Duplicates // one request billed twice across the inputs
}

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
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return b, nil
}

func (v *verifier) fetchRoots(ctx context.Context) error {
	b, err := v.get(ctx, "/v1/zk/keys/registry")
	if err != nil {
		return fmt.Errorf("registry roots: %w", err)
	}
	var reg struct {
		Roots []string `json:"roots"`
	}
	if err := json.Unmarshal(b, &reg); err != nil {
		return fmt.Errorf("registry roots: %w", err)
	}
	for _, r := range reg.Roots {
		e, err := receipts.ParseElement(r)
		if err != nil {
			return fmt.Errorf("registry roots: %w", err)
		}
		v.roots = append(v.roots, e)
	}
	if len(v.roots) == 0 {
		return errors.New("the gateway has no registered model versions")
	}
	return nil
}

func (v *verifier) key(ctx context.Context, id string) (*receipts.VerifyingKey, error) {
	if vk, ok := v.keys[id]; ok {
		return vk, nil
	}
	if v.gateway == "" {
		return nil, fmt.Errorf("%w: no key %q given (-vk or -gateway)", receipts.ErrVerifyingKey, id)
	}
	b, err := v.get(ctx, "/v1/zk/keys/"+url.PathEscape(id))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", receipts.ErrVerifyingKey, err)
	}
	vk, err := receipts.ParseVerifyingKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", receipts.ErrVerifyingKey, err)
	}
	v.keys[id] = vk // verified against the receipt's key ID by receipts.Verify
	return vk, nil
}

// check verifies one receipt and prints its line; it reports success.
func (v *verifier) check(ctx context.Context, w io.Writer, raw json.RawMessage) bool {
	var r receipts.Receipt
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		fmt.Fprintf(w, "?\tFAIL: malformed receipt: %v\n", err)
		return false
	}
	digest := r.ModelDigest
	if len(digest) > 12 {
		digest = digest[:12]
	}
	fmt.Fprintf(w, "%s\tmodel=%s@%s\tworker=%s\ttokens=%d+%d\t", r.ID, r.Model, digest, r.WorkerID, r.PromptTokens, r.CompletionTokens)
	err := v.verify(ctx, &r)
	if err != nil {
		fmt.Fprintf(w, "FAIL: %v\n", err)
		return false
	}
	fmt.Fprintln(w, "OK")
	return true
}

func (v *verifier) verify(ctx context.Context, r *receipts.Receipt) error {
	if r.Batch == nil {
		return receipts.Verify(r, nil, fr.Element{}) // reports not proven / version
	}
	vk, err := v.key(ctx, r.Batch.VerifyingKeyID)
	if err != nil {
		return err
	}
	root := v.roots[0]
	if claimed, err := receipts.ParseElement(r.Batch.Public.RegistryRoot); err == nil {
		for _, t := range v.roots {
			if t.Equal(&claimed) {
				root = t
			}
		}
	}
	if err := receipts.Verify(r, vk, root); err != nil {
		return err
	}
	return v.dups.Add(r)
}
