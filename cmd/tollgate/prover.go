package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
)

func init() {
	register(commands, "prover", "prove pending receipts in a data directory's ledger", runProver)
}

// LedgerFile is the embedded ledger's file name inside a data directory.
const ledgerFile = "receipts.db"

func runProver(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("prover", flag.ContinueOnError)
	data := fs.String("data", "data", "data directory holding "+ledgerFile+" (not while a gateway holds it: the embedded store is single-process)")
	keys := fs.String("keys", "", "key directory (default DATA/keys)")
	maxAge := fs.Duration("max-age", time.Second, "close a batch when its oldest receipt has waited this long")
	interval := fs.Duration("interval", 250*time.Millisecond, "ledger scan interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keys == "" {
		*keys = filepath.Join(*data, "keys")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := ledger.OpenBolt(filepath.Join(*data, ledgerFile))
	if err != nil {
		return err
	}
	defer st.Close()
	l := ledger.New(st, ledger.Options{KeyDir: *keys, Logger: logger})
	logger.Info("prover started", "data", *data, "keys", *keys, "max_age", *maxAge)
	return prover.Run(ctx, l, prover.Config{KeyDir: *keys, MaxAge: *maxAge, Interval: *interval, Logger: logger})
}
