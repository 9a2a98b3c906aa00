package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/redistest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A worker on replica A's outbound link (link://<session>) is reachable
// only through A. Replica B must not route to it, and must not warn about
// its record on every sync either: each link worker made every other
// replica log "record skipped" once a sync, a flood that buries real
// warnings.
func TestLinkWorkerStaysOnItsReplica(t *testing.T) {
	rd := redistest.New(t)
	clk := clock.NewFake(time.Now())
	var bLog lockedBuffer
	a := newFakeLocal()
	ra, err := New(rd.Client, a, Options{Prefix: rd.Prefix, Clock: clk, Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b := newFakeLocal()
	rb, err := New(rd.Client, b, Options{Prefix: rd.Prefix, Clock: clk, Replica: "b", Logger: slog.New(slog.NewTextHandler(&bLog, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w := reg("w1", "s1")
	w.URL = "link://0123456789abcdef0123456789abcdef"
	ra.Upsert(w)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		rb.Sync(ctx)
		ra.Sync(ctx)
	}
	if calls := b.take(); len(calls) != 0 {
		t.Fatalf("replica B was told of a worker only A can reach: %v", calls)
	}
	if got := a.take(); len(got) != 1 || got[0] != "upsert w1 s1" {
		t.Fatalf("replica A's own link worker: %v", got)
	}
	if strings.Contains(bLog.String(), "skipped") {
		t.Fatalf("replica B warned about the link worker's record:\n%s", bLog.String())
	}
}
