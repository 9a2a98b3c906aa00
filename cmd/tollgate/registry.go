package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

var registryCommands = map[string]command{}

func init() {
	register(commands, "registry", "the admission registry's signed root history (registry help)", func(ctx context.Context, args []string) error {
		return dispatch(ctx, "tollgate registry", registryCommands, args)
	})
	register(registryCommands, "export", "write the operator-signed registry root history to a file for `tollgate verify --roots`", runRegistryExport)
	register(keyCommands, "operator", "create an operator key (ed25519) that signs the registry root history", runKeysOperator)
}

// runRegistryExport is `tollgate registry export --out FILE`: from a
// running gateway (GET /v1/zk/registry, checked before it is written), or
// from a data directory's ledger (the gateway stopped: the embedded store is
// single-process) or a Redis ledger, with a head signed now by the operator
// key.
func runRegistryExport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate registry export", flag.ContinueOnError)
	out := fs.String("out", "", "file to write (- for stdout)")
	gateway := fs.String("gateway", "", "fetch from this gateway instead of opening a ledger")
	data := fs.String("data", "data", "data directory holding "+ledgerFile+" and "+operatorKeyFile)
	operatorFile := fs.String("operator-key", "", "operator key: the secret file to sign the head (default DATA/"+operatorKeyFile+"); with --gateway, a public key file the fetched history must be signed by")
	redisURL := fs.String("redis", "", "read the shared ledger in this Redis (redis://host:port/db) instead of DATA; env TOLLGATE_REDIS_URL")
	prefix := fs.String("redis-prefix", "{tollgate}:", "key prefix, as the gateways' redis.prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("registry export: --out FILE is required")
	}
	var hist *receipts.RootHistory
	var err error
	if *gateway != "" {
		hist, err = fetchRootHistory(ctx, strings.TrimSuffix(*gateway, "/"), *operatorFile)
	} else {
		hist, err = ledgerRootHistory(ctx, *data, firstNonEmpty(*operatorFile, filepath.Join(*data, operatorKeyFile)),
			firstNonEmpty(*redisURL, os.Getenv("TOLLGATE_REDIS_URL")), *prefix)
	}
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(hist, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s: %d entries, operator key %s, as of %s\n", *out, len(hist.Entries), hist.OperatorKey, hist.Head.AsOf.Format(time.RFC3339Nano))
	return nil
}

// fetchRootHistory gets and checks a gateway's history (under the pinned
// operator key when given).
func fetchRootHistory(ctx context.Context, gateway, operatorFile string) (*receipts.RootHistory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gateway+"/v1/zk/registry", nil)
	if err != nil {
		return nil, err
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, receipts.MaxRootHistoryBytes+1))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/zk/registry: %s: %s", res.Status, bytes.TrimSpace(b))
	}
	hist, err := receipts.ParseRootHistory(b)
	if err != nil {
		return nil, err
	}
	var pin []byte
	if operatorFile != "" {
		kb, err := os.ReadFile(operatorFile)
		if err != nil {
			return nil, err
		}
		if pin, err = receipts.ReadOperatorPublicKey(kb); err != nil {
			return nil, fmt.Errorf("%s: %w", operatorFile, err)
		}
	}
	if _, err := hist.Verify(pin); err != nil {
		return nil, err
	}
	if hist.Head == nil {
		return nil, errors.New("the gateway's history has no signed head")
	}
	return hist, nil
}

// ledgerRootHistory reads the history from a ledger and signs its head.
func ledgerRootHistory(ctx context.Context, data, operatorFile, redisURL, prefix string) (*receipts.RootHistory, error) {
	kb, err := os.ReadFile(operatorFile)
	if err != nil {
		return nil, fmt.Errorf("operator key (to sign the history's head): %w", err)
	}
	op, err := receipts.ReadOperatorKey(kb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", operatorFile, err)
	}
	var st ledger.Store
	if redisURL != "" {
		c, err := dialRedis(ctx, redisURL, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		rs, err := ledger.OpenRedis(ctx, "", ledger.RedisOptions{Client: c, Prefix: prefix + "ledger:"})
		if err != nil {
			return nil, err
		}
		st = rs
	} else {
		bs, err := ledger.OpenBolt(filepath.Join(data, ledgerFile))
		if err != nil {
			return nil, fmt.Errorf("%w (is a gateway holding it? use --gateway URL)", err)
		}
		st = bs
	}
	defer st.Close()
	return ledger.New(st, ledger.Options{Operator: op}).RootHistory(ctx)
}

// runKeysOperator is `tollgate keys operator --out FILE`: a new operator
// key (0600) and its public half (FILE.pub) for verifiers to pin.
func runKeysOperator(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate keys operator", flag.ContinueOnError)
	out := fs.String("out", "", "file to write the new key to (created 0600, never overwritten; public key in FILE.pub)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("keys operator: --out FILE is required")
	}
	k, err := receipts.GenerateOperatorKey(nil)
	if err != nil {
		return err
	}
	if err := writeOperatorKeyFiles(*out, k); err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "wrote %s and %s.pub\npublic_key %s\n", *out, *out, k.PublicHex())
	return nil
}
