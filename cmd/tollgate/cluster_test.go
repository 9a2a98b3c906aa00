package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/config"
	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/zk"
)

// syncBuffer is a log sink shared by every goroutine of the cluster test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRedisCluster is issue 9's acceptance run: two gateway replicas, two
// workers (one registered with each replica) and two provers share one
// redis-server (appendonly yes, appendfsync always). Requests spread over
// both replicas are served by both workers; a rate limit holds across the
// replicas; one prover is killed in the middle of a batch; Redis is
// killed and restarted mid-run; and every acknowledged receipt (a 200 with
// X-Tollgate-Receipt) ends proven exactly once.
func TestRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster run skipped in -short mode")
	}
	began := time.Now()
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	keyDir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", logs.String())
		}
	})
	const (
		appKey     = "sk-cluster-app"
		limitedKey = "sk-cluster-limited"
		token      = "pt-cluster-0123456789"
		rpm        = 100
	)

	// Two gateway replicas, signing one registry root history with one
	// operator key.
	operatorKey := filepath.Join(t.TempDir(), "operator.key")
	var gws [2]*gatewayStack
	for i := range gws {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.APIKeys = []config.APIKey{{ID: "app", Key: appKey}, {ID: "limited", Key: limitedKey, RequestsPerMinute: rpm}}
		cfg.ProviderTokens = []string{token}
		cfg.OpenRegistration = true
		cfg.Redis.URL = srv.URL
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listen = ln.Addr().String()
		gw, err := startGateway(cfg, ln, stackOptions{receipts: true, operatorKey: operatorKey}, logger.With("replica", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		gws[i] = gw
		t.Cleanup(func() { gw.stop() })
	}

	// Two workers, one registered with each replica.
	for i := range 2 {
		eng, closeEng, err := openEngine(engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}, logger)
		if err != nil {
			t.Fatal(err)
		}
		key, err := loadOrCreateKey(filepath.Join(t.TempDir(), "worker.key"), logger)
		if err != nil {
			t.Fatal(err)
		}
		wln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runWorkerNode(ctx, wln, workerNode{gatewayURL: gws[i].URL(), providerToken: token, key: key,
				advertise: "http://" + wln.Addr().String(), engine: eng, dataDir: t.TempDir(), logger: logger.With("worker", i)})
		}()
		t.Cleanup(func() { cancel(); <-done; closeEng() })
	}
	// Both replicas see both workers (each learned one through Redis).
	// Start-up, not a timing assertion: bounded at 30 s.
	waitUntil(t, 30*time.Second, "both replicas route to both workers", func() bool {
		for _, gw := range gws {
			n := 0
			for _, w := range gw.sched.Workers() {
				if w.Healthy {
					n++
				}
			}
			if n != 2 {
				return false
			}
		}
		return true
	})
	model := gws[0].sched.Models()[0].Name

	// Two provers on the shared queue. The first is killed while its first
	// batch waits for the worker's countersignature (with at most a few
	// batches open per worker, and 256-leaf keys in the key directory, a
	// prover may get only one or two of them).
	dial := func() *ledger.Ledger {
		st, err := ledger.OpenRedis(context.Background(), srv.URL, ledger.RedisOptions{Prefix: "{tollgate}:ledger:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return ledger.New(st, ledger.Options{KeyDir: keyDir, Logger: logger})
	}
	client := &http.Client{Timeout: 30 * time.Second}
	var p1Jobs atomic.Int32
	stuck := make(chan struct{})
	l1 := dial()
	countersignAndDie := func(ctx context.Context, wid string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
		if p1Jobs.Add(1) == 1 {
			close(stuck)
			<-ctx.Done() // killed mid-batch
			return nil, ctx.Err()
		}
		url, err := l1.WorkerURL(ctx, wid)
		if err != nil {
			return nil, err
		}
		cred, err := l1.CountersignCredential(ctx, wid)
		if err != nil {
			return nil, err
		}
		return workers.RequestCountersign(ctx, client, url, cred, req)
	}
	provers := []struct {
		name string
		l    *ledger.Ledger
		cs   func(context.Context, string, *workers.CountersignRequest) (*workers.CountersignResponse, error)
	}{{"p1", l1, countersignAndDie}, {"p2", dial(), nil}}
	cancels := make([]context.CancelFunc, len(provers))
	stopped := make([]chan struct{}, len(provers))
	for i, p := range provers {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i], stopped[i] = cancel, make(chan struct{})
		go func() {
			defer close(stopped[i])
			err := prover.Run(ctx, p.l, prover.Config{KeyDir: keyDir, Logger: logger.With("prover", p.name), Consumer: p.name,
				MaxAge: 300 * time.Millisecond, Interval: 100 * time.Millisecond, ClaimIdle: time.Second, Countersign: p.cs})
			if err != nil {
				t.Errorf("prover %s: %v", p.name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-stopped[i] })
	}
	killed := make(chan time.Time, 1)
	go func() {
		<-stuck
		cancels[0]()
		<-stopped[0]
		killed <- time.Now()
	}()

	// Load, spread over both replicas; Redis is killed and restarted in
	// the middle of it.
	var mu sync.Mutex
	acked := map[string]bool{}
	perReplica := [2]int{}
	send := func(i int, key string) (int, error) {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"request %d"}],"max_tokens":8}`, model, i)
		req, _ := http.NewRequest("POST", gws[i%2].URL()+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			id := resp.Header.Get("X-Tollgate-Receipt")
			if id == "" {
				return 0, errors.New("200 without a receipt")
			}
			mu.Lock()
			acked[id] = true
			perReplica[i%2]++
			mu.Unlock()
		}
		return resp.StatusCode, nil
	}
	run := func(n, workers int, key string, mid func()) map[int]int {
		codes := map[int]int{}
		var next atomic.Int64
		var wg sync.WaitGroup
		var once sync.Once
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if i == n/2 && mid != nil {
						once.Do(mid)
					}
					code, err := send(i, key)
					if err != nil {
						t.Errorf("request %d: %v", i, err)
						return
					}
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return codes
	}
	var degraded bool
	codes := run(240, 8, appKey, func() {
		srv.Stop()
		// While Redis is down: still serving, but not ready.
		waitUntil(t, 10*time.Second, "a replica reports not-ready", func() bool {
			resp, err := client.Get(gws[0].URL() + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			degraded = resp.StatusCode == 503
			return degraded
		})
		for i := range 16 {
			if code, err := send(1000+i, appKey); err != nil || code != 200 {
				t.Errorf("request during the outage: %d %v", code, err)
			}
		}
		logger.Info("test: restarting redis-server")
		srv.Restart(t)
		logger.Info("test: redis-server restarted")
	})
	if codes[200] != 240 {
		t.Errorf("load with Redis restarted: %v, want 240 × 200", codes)
	}
	// Ready again, and each replica's Redis client dials again: after an
	// outage go-redis refuses new connections until its one-a-second
	// re-dial succeeds, and meanwhile the limits would fall back to
	// per-replica buckets (the degraded mode, not what this phase measures).
	waitUntil(t, 20*time.Second, "both replicas ready again", func() bool {
		for _, gw := range gws {
			for range 3 {
				if gw.redis.client.Ping(context.Background()).Err() != nil {
					return false
				}
			}
			if n, err := gw.redis.spool.Spooled(); err != nil || n != 0 {
				return false
			}
			resp, err := client.Get(gw.URL() + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return false
			}
		}
		return true
	})

	// A per-key limit holds across the two replicas.
	logger.Info("test: rate-limit phase")
	start := time.Now()
	limited := run(3*rpm, 8, limitedKey, nil)
	elapsed := time.Since(start)
	refill := elapsed.Seconds() * rpm / 60
	upper := int(float64(rpm) + refill)
	allowed := limited[200]
	if limited[200]+limited[429] != 3*rpm || allowed < rpm || allowed > upper {
		t.Errorf("rate limit %d/min over %s across 2 replicas: %v; want %d..%d allowed", rpm, elapsed, limited, rpm, upper)
	}
	t.Logf("rate limit: %d allowed of %d sent at %d/min over %s (bound %d + %.2f refill): %.2f%% of the bound",
		allowed, 3*rpm, rpm, elapsed.Round(time.Millisecond), rpm, refill, 100*float64(allowed)/(float64(rpm)+refill))

	// Every acknowledged receipt ends proven, exactly once.
	check := dial()
	st := check.Store()
	waitUntil(t, 90*time.Second, "every receipt proven", func() bool {
		n, err := check.Counts(context.Background())
		return err == nil && n.Pending == 0 && n.Proven >= int64(len(acked))
	})
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	entries, err := st.Entries(context.Background(), ids)
	if err != nil {
		t.Fatalf("acknowledged receipts missing after the Redis restart: %v", err)
	}
	batches := map[uint64]int{}
	for _, e := range entries {
		_, b, err := st.Get(context.Background(), e.ID)
		if err != nil || b == nil || b.Status != receipts.StatusProven {
			t.Fatalf("receipt %s: batch %+v, %v", e.ID, b, err)
		}
		batches[b.Seq]++
	}
	n, _ := check.Counts(context.Background())
	if n.Proven != int64(len(acked)) || n.Failed != 0 || n.Pending != 0 {
		t.Errorf("counts %+v for %d acknowledged receipts: each must be proven exactly once", n, len(acked))
	}
	select {
	case <-killed:
	default:
		t.Error("prover p1 was never killed mid-batch")
	}
	if !degraded {
		t.Error("no replica reported not-ready while Redis was down")
	}
	for i, c := range perReplica {
		if c == 0 {
			t.Errorf("replica %d served nothing", i)
		}
	}
	for i, gw := range gws {
		for _, w := range gw.sched.Workers() {
			if w.Served == 0 {
				t.Errorf("replica %d never used worker %s", i, w.WorkerID)
			}
		}
	}
	t.Logf("%d receipts proven in %d batches by 2 provers (one killed mid-batch) across a Redis restart; %s wall",
		len(acked), len(batches), time.Since(began).Round(100*time.Millisecond))
}

// waitUntil polls cond every 20 ms until it holds or d passes (then fails
// t naming what). It waits on outside processes and the cluster's own
// loops; it asserts no timing.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
