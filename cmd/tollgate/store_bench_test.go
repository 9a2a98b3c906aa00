package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/redistest"
)

// BenchmarkReceiptThroughput is the whole gateway's throughput with
// receipts on, the embedded bbolt ledger against the Redis ledger (a
// redis-server of the benchmark's own with appendonly yes and appendfsync
// always, the recommended setting): 64 clients in a closed loop through
// `tollgate dev` on the simulator at 1/100 of sim-tiny's delays, so the
// front door and the ledger, not the engine, set the pace. Every response
// waits for its receipt to be durable. It reports requests per second.
//
//	go test -run '^$' -bench ReceiptThroughput -benchtime 4000x ./cmd/tollgate/
func BenchmarkReceiptThroughput(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		b.Run("store="+store, func(b *testing.B) {
			g := gatewayFlags{data: b.TempDir(), apiKey: sdkKey, adminKey: "sk-admin-test", noProver: true}
			if store == "redis" {
				g.redisURL = redistest.Start(b, "--appendonly", "yes", "--appendfsync", "always").URL
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			d, err := startDev(context.Background(), devOptions{ln: ln, logger: slog.New(slog.DiscardHandler), gateway: g,
				engine: engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 0.01}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { d.stop() })
			const clients = 64
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			url := d.URL() + "/v1/chat/completions"
			const body = `{"model":"sim-tiny","messages":[{"role":"user","content":"Tell me a short story"}],"max_tokens":8}`
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ReportAllocs()
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := postReceipt(client, url, body); err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// postReceipt sends one chat request and checks it succeeded with a receipt.
func postReceipt(client *http.Client, url, body string) error {
	receipt, err := postChat(client, url, body)
	if err == nil && receipt == "" {
		err = errors.New("a response without X-Tollgate-Receipt")
	}
	return err
}

// postChat sends one chat request with the dev key, reads the whole answer
// and returns its receipt header; a status other than 200 is an error.
func postChat(client *http.Client, url, body string) (receipt string, err error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Tollgate-Receipt"), nil
}
