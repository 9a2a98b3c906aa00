package responses

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Another key's id, a guessed id and an id with path/pointer tricks all
// read as not found, in both stores' Get and Delete.
func TestRedteamStoreIsolation(t *testing.T) {
	ctx := context.Background()
	clk := &fakeNow{t: time.Unix(1_700_000_000, 0)}
	bolt, err := OpenBolt(filepath.Join(t.TempDir(), "r.db"), Retention{}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if err := bolt.Put(ctx, stored("alice", "resp_a", clk.now(), "secret")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"resp_a", "resp_A", "resp_a ", "resp_", ""} {
		if _, err := bolt.Get(ctx, "mallory", id, ""); !is404(err) {
			t.Errorf("mallory Get %q: %v", id, err)
		}
		if err := bolt.Delete(ctx, "mallory", id); !is404(err) {
			t.Errorf("mallory Delete %q: %v", id, err)
		}
		if _, err := bolt.Get(ctx, "", id, ""); !is404(err) {
			t.Errorf("empty owner Get %q: %v", id, err)
		}
	}
	if _, err := bolt.Get(ctx, "alice", "resp_a", ""); err != nil {
		t.Fatalf("owner lost it: %v", err)
	}
}

// One key filling the store must not evict another key's responses
// (MaxResponses is global, oldest first).
func TestRedteamStoreEvictionAcrossKeys(t *testing.T) {
	t.Skip("redteam: BUG (documented limit, docs/responses.md) MaxResponses is one global FIFO: a key that stores many cheap responses evicts every other key's")
	ctx := context.Background()
	clk := &fakeNow{t: time.Unix(1_700_000_000, 0)}
	s, err := OpenBolt(filepath.Join(t.TempDir(), "r.db"), Retention{MaxResponses: 3}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Put(ctx, stored("alice", "resp_alice", clk.now(), "q"))
	for i := 0; i < 3; i++ {
		clk.add(time.Second)
		s.Put(ctx, stored("mallory", "resp_m"+strconv.Itoa(i), clk.now(), "spam"))
	}
	if _, err := s.Get(ctx, "alice", "resp_alice", ""); err != nil {
		t.Fatalf("alice's response evicted by mallory's: %v", err)
	}
}
