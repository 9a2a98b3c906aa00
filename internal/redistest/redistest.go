// Package redistest gives tests a real Redis: the one at REDIS_URL or
// redis://127.0.0.1:6379 when reachable, otherwise a throwaway redis-server
// started in the test's temporary directory. Each test gets its own key
// prefix, deleted when the test ends, so tests never see each other's keys.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultURL is used when REDIS_URL is unset.
const DefaultURL = "redis://127.0.0.1:6379"

// The configured server is probed once per test binary, so that with none
// reachable each test pays for starting its own, not for timing out first.
var (
	probeOnce sync.Once
	probeErr  error
)

// Redis is one test's view of a Redis server.
type Redis struct {
	URL    string        // where the server is
	Prefix string        // this test's key prefix, with a hash tag: "{tg-<rand>}:"
	Client *redis.Client // closed when the test ends
}

// New returns a Redis for t, skipping t only if no Redis is reachable and
// none can be started. The prefix's keys are deleted when t ends.
func New(t testing.TB) *Redis {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = DefaultURL
	}
	probeOnce.Do(func() {
		c, err := dial(url)
		if err == nil {
			c.Close()
		}
		probeErr = err
	})
	c, err := (*redis.Client)(nil), probeErr
	if err == nil {
		c, err = dial(url)
	}
	if err != nil {
		if _, lookErr := exec.LookPath("redis-server"); lookErr != nil {
			t.Skipf("redistest: no Redis at %s (%v) and no redis-server on PATH; set REDIS_URL or install redis-server", url, err)
		}
		srv := Start(t)
		url = srv.URL
		if c, err = dial(url); err != nil {
			t.Fatalf("redistest: started redis-server but cannot reach it: %v", err)
		}
	}
	r := &Redis{URL: url, Prefix: "{tg-" + randHex() + "}:", Client: c}
	t.Cleanup(func() {
		Flush(context.Background(), c, r.Prefix)
		c.Close()
	})
	return r
}

// Flush deletes every key under prefix.
func Flush(ctx context.Context, c *redis.Client, prefix string) {
	iter := c.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			c.Del(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Del(ctx, keys...)
	}
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	return r.Replace(s)
}

func dial(url string) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	opts.DialTimeout, opts.DialerRetries = time.Second, 1
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func randHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Server is a redis-server process owned by one test.
type Server struct {
	URL  string
	Dir  string // its working directory (AOF/RDB files live here)
	Args []string
	cmd  *exec.Cmd
}

// Start runs a throwaway redis-server on a free port in t.TempDir() with
// persistence off unless extra arguments (e.g. "--appendonly", "yes",
// "--appendfsync", "always") say otherwise. It is killed when t ends. It
// fails t if redis-server is not installed.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("redistest: redis-server not on PATH: %v", err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no"}, extra...)
	s := &Server{URL: fmt.Sprintf("redis://127.0.0.1:%d", port), Dir: dir, Args: args}
	s.start(t, bin)
	t.Cleanup(s.Stop)
	return s
}

// Restart kills the server (SIGKILL: no final save) and starts it again
// with the same directory and arguments, as a crash would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	s.start(t, bin)
}

// Stop kills the server, if running.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *Server) start(t testing.TB, bin string) {
	t.Helper()
	s.cmd = exec.Command(bin, s.Args...)
	s.cmd.Dir = s.Dir
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("redistest: start redis-server: %v", err)
	}
	// Wait for the server to accept connections. This is start-up of an
	// outside process, not a timing assertion: it gives up after 10 s.
	var lastErr error
	for delay := 5 * time.Millisecond; delay < 10*time.Second; delay *= 2 {
		c, err := dial(s.URL)
		if err == nil {
			c.Close()
			return
		}
		lastErr = err
		time.Sleep(delay)
	}
	t.Fatalf("redistest: redis-server at %s did not come up: %v", s.URL, lastErr)
}
