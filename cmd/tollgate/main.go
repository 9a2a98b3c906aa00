// Command tollgate is Tollgate's one binary: dev, gateway, worker, prover,
// verify, keys and bench. It holds flag parsing and wiring only; each
// subcommand lives in its own file and registers itself in commands (or in
// keyCommands / benchCommands for `tollgate keys ...` and `tollgate bench ...`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run gets the arguments after its name and a
// context cancelled on SIGINT/SIGTERM.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var (
	commands      = map[string]command{}
	keyCommands   = map[string]command{}
	benchCommands = map[string]command{}
)

func register(table map[string]command, name, summary string, run func(ctx context.Context, args []string) error) {
	if _, dup := table[name]; dup {
		panic("duplicate command " + name)
	}
	table[name] = command{summary: summary, run: run}
}

func init() {
	register(commands, "keys", "manage worker and proving keys (keys help)", func(ctx context.Context, args []string) error {
		return dispatch(ctx, "tollgate keys", keyCommands, args)
	})
	register(commands, "bench", "run benchmarks (bench help)", func(ctx context.Context, args []string) error {
		return dispatch(ctx, "tollgate bench", benchCommands, args)
	})
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, "tollgate", commands, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, prog string, table map[string]command, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(prog, table)
		if len(args) == 0 {
			return flag.ErrHelp
		}
		return nil
	}
	c, ok := table[args[0]]
	if !ok {
		usage(prog, table)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return c.run(ctx, args[1:])
}

func usage(prog string, table map[string]command) {
	names := make([]string, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <command> [flags]\n\ncommands:\n", prog)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, table[n].summary)
	}
}
