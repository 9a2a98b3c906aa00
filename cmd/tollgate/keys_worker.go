package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/tollgate-ai/tollgate/workers/keys"
)

func init() {
	register(keyCommands, "worker", "create a worker signing key (EdDSA on BN254 twisted Edwards)", runKeysWorker)
}

// runKeysWorker is `tollgate keys worker --out FILE`.
func runKeysWorker(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("tollgate keys worker", flag.ContinueOnError)
	out := fs.String("out", "", "file to write the new key to (created 0600; never overwritten)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("keys worker: --out FILE is required")
	}
	k, err := keys.Generate(nil)
	if err != nil {
		return err
	}
	if err := keys.Save(*out, k); err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "wrote %s\nworker_id  %s\npublic_key %s\n", *out, k.WorkerID(), k.PublicHex())
	return nil
}
