package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	gnarklogger "github.com/consensys/gnark/logger"

	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/zk"
)

func init() {
	gnarklogger.Disable() // gnark logs every compile and proof to stdout
	register(keyCommands, "setup", "development proving keys for the receipt circuit (single-party set-up)", runKeysSetup)
	register(keyCommands, "ceremony", "Groth16 MPC ceremony for production keys (ceremony help)", runKeysCeremony)
	register(keyCommands, "solidity", "export the on-chain verifier for a verifying key (v2: TollgateBatchVerifier)", runKeysSolidity)
}

func parseCapacities(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n&(n-1) != 0 || n > 1024 {
			return nil, fmt.Errorf("capacity %q: want a power of two from 2 to 1024", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runKeysSetup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keys setup", flag.ContinueOnError)
	dir := fs.String("dir", "data/keys", "key directory")
	caps := fs.String("capacity", "8,64,256", "comma-separated batch capacities (8, 64, 256, 1024)")
	force := fs.Bool("force", false, "replace existing keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, err := parseCapacities(*caps)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if err := ctx.Err(); err != nil {
			return err
		}
		pkPath, vkPath := zk.KeyFiles(*dir, c)
		if exists(pkPath) && exists(vkPath) && !*force {
			fmt.Fprintf(os.Stderr, "capacity %d: keys exist in %s (use -force to replace)\n", c, *dir)
			continue
		}
		start := time.Now()
		ccs, err := zk.Compile(c)
		if err != nil {
			return err
		}
		if !*force {
			// Under the key directory's lock, as every development set-up
			// (the background one of dev runs this command): it completes
			// a pair that a killed set-up left half written.
			if err := zk.EnsureDevKeys(*dir, c); err != nil {
				return err
			}
		} else {
			pk, vk, err := zk.SetupDev(c)
			if err != nil {
				return err
			}
			if err := zk.SaveKeys(*dir, c, zk.CeremonyDev, 0, pk, vk); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "capacity %d: %d constraints (%.0f per receipt), development keys in %s (%s)\n",
			c, ccs.GetNbConstraints(), float64(ccs.GetNbConstraints())/float64(c), *dir, time.Since(start).Round(time.Millisecond))
	}
	fmt.Fprintln(os.Stderr, "warning: development keys come from a single-party set-up; use `tollgate keys ceremony` for production")
	return nil
}

func runKeysSolidity(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keys solidity", flag.ContinueOnError)
	vkPath := fs.String("vk", "data/keys/batch-8.vk", "verifying key file")
	out := fs.String("out", "-", "output .sol file, - for stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*vkPath)
	if err != nil {
		return err
	}
	vk, err := receipts.ParseVerifyingKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *vkPath, err)
	}
	if vk.Header.Circuit != receipts.CircuitV2 {
		fmt.Fprintf(os.Stderr, "warning: %s is a %s (unaudited) key: the verifier alone, without TollgateBatchVerifier\n", *vkPath, vk.Header.Circuit)
	}
	return writeOut(*out, func(w io.Writer) error { return zk.ExportKeySolidity(w, vk) })
}

func writeOut(path string, write func(io.Writer) error) error {
	if path == "-" {
		return write(os.Stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

const ceremonyUsage = `usage: tollgate keys ceremony <step> [flags] [files]

Runs gnark's Groth16 MPC for one batch capacity, one step per participant:

  phase1-init       -capacity N -out p1-0.bin
  phase1-contribute -in p1-K.bin -out p1-K+1.bin      (each participant in turn)
  phase1-seal       -capacity N -beacon HEX -out commons.bin p1-1.bin p1-2.bin ...
  phase2-init       -capacity N -commons commons.bin -out p2-0.bin
  phase2-contribute -in p2-K.bin -out p2-K+1.bin      (each participant in turn)
  finalize          -capacity N -commons commons.bin -beacon HEX -dir data/keys p2-1.bin p2-2.bin ...

seal and finalize verify every contribution in order; the beacon is public
randomness fixed after the last contribution (e.g. a drand round).
`

func runKeysCeremony(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Fprint(os.Stderr, ceremonyUsage)
		return nil
	}
	step := args[0]
	fs := flag.NewFlagSet("keys ceremony "+step, flag.ContinueOnError)
	capacity := fs.Int("capacity", 8, "batch capacity")
	in := fs.String("in", "", "previous state file")
	out := fs.String("out", "", "output file")
	commons := fs.String("commons", "commons.bin", "phase 1 SRS commons file")
	beaconHex := fs.String("beacon", "", "public random beacon, hex")
	dir := fs.String("dir", "data/keys", "key directory (finalize)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	open := func(p string) (*os.File, error) {
		if p == "" {
			return nil, errors.New("missing file flag")
		}
		return os.Open(p)
	}
	contributions := func() ([]io.Reader, func(), error) {
		var rs []io.Reader
		var fs2 []*os.File
		closeAll := func() {
			for _, f := range fs2 {
				f.Close()
			}
		}
		for _, p := range fs.Args() {
			f, err := os.Open(p)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			fs2 = append(fs2, f)
			rs = append(rs, f)
		}
		return rs, closeAll, nil
	}
	beacon := func() ([]byte, error) {
		b, err := hexDecode(*beaconHex)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("-beacon: want non-empty hex")
		}
		return b, nil
	}
	switch step {
	case "phase1-init":
		return writeOut(*out, func(w io.Writer) error { return zk.Phase1Init(w, *capacity) })
	case "phase1-contribute", "phase2-contribute":
		f, err := open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		if step == "phase1-contribute" {
			return writeOut(*out, func(w io.Writer) error { return zk.Phase1Contribute(f, w) })
		}
		return writeOut(*out, func(w io.Writer) error { return zk.Phase2Contribute(f, w) })
	case "phase1-seal":
		b, err := beacon()
		if err != nil {
			return err
		}
		rs, done, err := contributions()
		if err != nil {
			return err
		}
		defer done()
		return writeOut(*out, func(w io.Writer) error { return zk.Phase1Seal(w, *capacity, b, rs...) })
	case "phase2-init":
		c, err := open(*commons)
		if err != nil {
			return err
		}
		defer c.Close()
		return writeOut(*out, func(w io.Writer) error { return zk.Phase2Init(w, *capacity, c) })
	case "finalize":
		b, err := beacon()
		if err != nil {
			return err
		}
		c, err := open(*commons)
		if err != nil {
			return err
		}
		defer c.Close()
		rs, done, err := contributions()
		if err != nil {
			return err
		}
		defer done()
		pk, vk, err := zk.Finalize(*capacity, c, b, rs...)
		if err != nil {
			return err
		}
		if err := zk.SaveKeys(*dir, *capacity, zk.CeremonyMPC, len(rs), pk, vk); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "capacity %d: keys from %d phase 2 contributions written to %s\n", *capacity, len(rs), *dir)
		return nil
	default:
		fmt.Fprint(os.Stderr, ceremonyUsage)
		return fmt.Errorf("unknown ceremony step %q", step)
	}
}

func hexDecode(s string) ([]byte, error) {
	return hex.DecodeString(strings.TrimPrefix(s, "0x"))
}
