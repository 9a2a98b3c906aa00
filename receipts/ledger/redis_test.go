package ledger

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/redistest"
)

func openTestRedis(t *testing.T, url, prefix string) *RedisStore {
	t.Helper()
	st, err := OpenRedis(context.Background(), url, RedisOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestOpenRedisBadURL(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"not a url", "::nope"},
		{"wrong scheme", "http://127.0.0.1:6379"},
		{"nothing listening", "redis://127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, err := OpenRedis(context.Background(), tc.url, RedisOptions{}); err == nil {
				st.Close()
				t.Error("opened")
			}
		})
	}
}

// With appendonly yes + appendfsync always, a Redis crash (SIGKILL) loses
// no acknowledged receipt, even with concurrent group-committed appends.
func TestRedisRestartLosesNoAcknowledgedReceipt(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	st := openTestRedis(t, srv.URL, DefaultRedisPrefix)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked []string
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := confEntry(w*each + i)
				if err := st.Append(context.Background(), []*Entry{e}); err == nil {
					mu.Lock()
					acked = append(acked, e.ID)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	srv.Restart(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st2 := openTestRedis(t, srv.URL, DefaultRedisPrefix)
	got, err := st2.Entries(ctx, acked)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if len(got) != writers*each {
		t.Errorf("%d receipts after restart, want %d", len(got), writers*each)
	}
}
