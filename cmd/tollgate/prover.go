package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
)

func init() {
	register(commands, "prover", "prove pending receipts: a data directory's ledger, or with --redis the shared proving queue (run any number)", runProver)
}

// LedgerFile is the embedded ledger's file name inside a data directory.
const ledgerFile = "receipts.db"

func runProver(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("prover", flag.ContinueOnError)
	data := fs.String("data", "data", "data directory holding "+ledgerFile+" (not while a gateway holds it: the embedded store is single-process)")
	keys := fs.String("keys", "", "proving key directory (default DATA/keys), e.g. ceremony keys from `tollgate keys ceremony`")
	allowDev := fs.Bool("allow-dev-keys", false, "prove with development keys (single-party set-up: whoever ran it can forge receipts)")
	maxAge := fs.Duration("max-age", time.Second, "close a batch when its oldest receipt has waited this long")
	interval := fs.Duration("interval", 250*time.Millisecond, "ledger scan interval")
	redisURL := fs.String("redis", "", "prove from the shared ledger and proving queue in this Redis (redis://host:port/db), with any number of other provers; env TOLLGATE_REDIS_URL")
	prefix := fs.String("redis-prefix", "{tollgate}:", "key prefix, as the gateways' redis.prefix")
	claimIdle := fs.Duration("claim-idle", 30*time.Second, "take over a job another prover has left unacknowledged this long (it died)")
	consumer := fs.String("name", "", "this prover's name on the queue (default host-pid-random; must differ between provers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keys == "" {
		*keys = filepath.Join(*data, "keys")
	}
	logger := proverLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	have, err := checkProvingKeys(*keys, *allowDev, logger)
	if err != nil {
		return err
	}
	if !have {
		return fmt.Errorf("no proving keys in %s (`tollgate keys ceremony`, or `tollgate keys setup` for development keys)", *keys)
	}
	cfg := prover.Config{KeyDir: *keys, MaxAge: *maxAge, Interval: *interval, Logger: logger, ClaimIdle: *claimIdle, Consumer: *consumer}
	if u := firstNonEmpty(*redisURL, os.Getenv("TOLLGATE_REDIS_URL")); u != "" {
		rc := config.Redis{URL: u, Prefix: *prefix, WorkerTTL: config.Duration(10 * time.Second), ClaimIdle: config.Duration(*claimIdle)}
		if err := rc.Validate(); err != nil {
			return err
		}
		c, err := dialRedis(ctx, u, logger)
		if err != nil {
			return err
		}
		defer c.Close()
		st, err := ledger.OpenRedis(ctx, "", ledger.RedisOptions{Client: c, Prefix: *prefix + "ledger:"})
		if err != nil {
			return err
		}
		defer st.Close()
		logger.Info("prover started on the shared proving queue", "keys", *keys, "max_age", *maxAge)
		return prover.Run(ctx, ledger.New(st, ledger.Options{KeyDir: *keys, Logger: logger}), cfg)
	}
	st, err := ledger.OpenBolt(filepath.Join(*data, ledgerFile))
	if err != nil {
		return err
	}
	defer st.Close()
	l := ledger.New(st, ledger.Options{KeyDir: *keys, Logger: logger})
	logger.Info("prover started", "data", *data, "keys", *keys, "max_age", *maxAge)
	return prover.Run(ctx, l, cfg)
}
