package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/bench/soak"
	"github.com/tollgate-ai/tollgate/internal/redistest"
)

// TestSoakShort is `tollgate bench soak` for 20 s: mixed chat, streamed
// chat and embeddings at 50 req/s with receipts recorded. No request may
// fail, and after a 6 s warm-up goroutines and fds must not grow (a
// connection or goroutine leak per request shows within seconds). RSS gets
// a looser bound here than the 10 % of a 30-minute run: 14 s of a GOGC
// 400 % sawtooth on a shared machine is not a memory verdict.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s soak")
	}
	rep, err := runSoak(context.Background(), soakConfig{Duration: 20 * time.Second, Rate: 50, Sample: time.Second,
		Limits: soak.Limits{Warmup: 6 * time.Second, RSS: 0.5, Goroutines: 0.10, FDs: 0.10, Slack: 32}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rep.Growth {
		t.Logf("%-10s first %.0f last %.0f growth %+.1f%%", g.Series, g.First, g.Last, 100*g.Growth)
	}
	ok := 0
	for _, r := range rep.Load {
		ok += r.OK
	}
	t.Logf("%d requests answered, receipts %+v", ok, rep.Receipts)
	if !rep.Pass {
		t.Fatalf("soak failed: %v", rep.Failures)
	}
	if rep.Receipts.Pending == 0 {
		t.Error("no receipts recorded: the soak must run with receipts on")
	}
}

func TestSoakConfigValidate(t *testing.T) {
	ok := soakConfig{Duration: time.Minute, Rate: 10, Sample: time.Second}
	tests := []struct {
		name    string
		edit    func(*soakConfig)
		wantErr string // "" for valid
	}{
		{"defaults", func(*soakConfig) {}, ""},
		{"prover process with redis", func(c *soakConfig) {
			c.RedisURL, c.ProverProcess, c.ProverCapacities = "redis://127.0.0.1:6379", true, []int{8}
		}, ""},
		{"in-process prover on redis", func(c *soakConfig) { c.RedisURL, c.Prover = "redis://127.0.0.1:6379", true }, ""},
		{"prover process without redis", func(c *soakConfig) { c.ProverProcess, c.ProverCapacities = true, []int{8} }, "-prover-process needs -redis"},
		{"both provers", func(c *soakConfig) {
			c.RedisURL, c.ProverProcess, c.Prover, c.ProverCapacities = "redis://x", true, true, []int{8}
		}, "choose one"},
		{"no key capacity", func(c *soakConfig) { c.RedisURL, c.ProverProcess = "redis://x", true }, "at least one key capacity"},
		{"unknown capacity", func(c *soakConfig) {
			c.RedisURL, c.ProverProcess, c.ProverCapacities = "redis://x", true, []int{16}
		}, "capacity 16"},
		{"zero rate", func(c *soakConfig) { c.Rate = 0 }, "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestSoakProverProcess is the -redis -prover-process path for a few
// seconds: the child prover (this test binary run as tollgate) joins the
// shared queue, is sampled, stops cleanly with the load, and the soak's
// Redis keys are gone after.
func TestSoakProverProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("a soak with a child prover")
	}
	r := redistest.New(t)
	cfg := soakConfig{Duration: 12 * time.Second, Rate: 40, Sample: time.Second, RedisURL: r.URL, ProverProcess: true, ProverCapacities: []int{8},
		Limits: soak.Limits{Warmup: 4 * time.Second, RSS: 1, Goroutines: 1, FDs: 1, Slack: 64}, DataDir: t.TempDir()}
	cfg.proverCommand = func(args []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "TOLLGATE_RUN_MAIN=1", "TOLLGATE_ARGS="+strings.Join(args, " "))
		return cmd
	}
	rep, err := runSoak(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("receipts %+v, %.1f proven/s, prover exit %q", rep.Receipts, rep.ProvingRate, rep.Prover.Exit)
	// A first proof needs the keys loaded and seconds of CPU that a
	// shared machine may not give this short run: not proving yet is
	// logged, anything else fails.
	var failures []string
	for _, f := range rep.Failures {
		if f != "the prover process proved no receipt" {
			failures = append(failures, f)
		}
	}
	if len(failures) > 0 || rep.Prover.Exit != "" {
		log, _ := os.ReadFile(rep.Prover.Log)
		t.Fatalf("soak failed: %v, prover exit %q\nprover log:\n%s", failures, rep.Prover.Exit, log)
	}
	if len(rep.Prover.Samples) == 0 || rep.Prover.Samples[0].RSSBytes == 0 {
		t.Errorf("prover process not sampled: %+v", rep.Prover.Samples)
	}
	if n, err := r.Client.Keys(context.Background(), rep.Config.RedisPrefix+"*").Result(); err != nil || len(n) != 0 {
		t.Errorf("redis keys left under the soak's prefix: %v %v", n, err)
	}
}
