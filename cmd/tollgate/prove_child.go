package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/tollgate-ai/tollgate/zk"
)

func init() {
	register(commands, "prove-child", "internal: proves receipt batches for the in-process prover of dev/gateway, which starts it at the lowest CPU priority (framed witnesses on stdin, proofs on stdout)", runProveChild)
}

// runProveChild serves zk's proving-child protocol on stdin and stdout
// until stdin ends (its parent closed the pipe or died). Its parent checks
// every proof against the verifying key, so this process is trusted only
// to make progress.
func runProveChild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate prove-child", flag.ContinueOnError)
	keys := fs.String("keys", "", "proving key directory (the parent's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("process", "prove-child")
	if *keys == "" || fs.NArg() > 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	proto, err := protocolStdout()
	if err != nil {
		return err
	}
	return zk.ServeProofs(os.Stdin, proto, *keys, logger)
}
