package responses

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/redistest"
)

type store interface {
	Put(ctx context.Context, r *Stored) error
	Get(ctx context.Context, owner, id, param string) (*Stored, error)
	Delete(ctx context.Context, owner, id string) error
}

var (
	_ store = (*BoltStore)(nil)
	_ store = (*RedisStore)(nil)
)

// fakeNow is a settable clock.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeNow) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func stored(owner, id string, created time.Time, text string) *Stored {
	return &Stored{Owner: owner, Created: created, Conversation: []Item{{Type: ItemMessage, Role: "user", Content: text}},
		Response: &Response{ID: id, Object: "response", Status: StatusCompleted,
			Output: []OutputItem{{ID: "msg_1", Type: ItemMessage, Role: "assistant", Status: StatusCompleted, Content: []OutputText{newOutputText("answer")}}}}}
}

func is404(err error) bool {
	var ae *apierr.Error
	return errors.As(err, &ae) && ae.Status == 404 && ae.Code == "response_not_found"
}

func testStore(t *testing.T, open func(t *testing.T, ret Retention, now func() time.Time) store) {
	ctx := context.Background()
	clk := &fakeNow{t: time.Unix(1_700_000_000, 0)}
	s := open(t, Retention{TTL: time.Hour, MaxResponses: 3, MaxBytes: 4096}, clk.now)

	if err := s.Put(ctx, stored("alice", "resp_a", clk.now(), "q")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "alice", "resp_a", "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Response.ID != "resp_a" || got.History()[1].Content != "answer" {
		t.Errorf("got %+v", got)
	}
	// Another key sees the same 404 as for an unknown ID, and cannot delete.
	if _, err := s.Get(ctx, "mallory", "resp_a", "previous_response_id"); !is404(err) || apierr.From(err).Param != "previous_response_id" {
		t.Errorf("other owner get: %v, want 404 on previous_response_id", err)
	}
	if err := s.Delete(ctx, "mallory", "resp_a"); !is404(err) {
		t.Errorf("other owner delete: %v, want 404", err)
	}
	if _, err := s.Get(ctx, "alice", "resp_a", ""); err != nil {
		t.Errorf("after a refused delete: %v", err)
	}
	if _, err := s.Get(ctx, "alice", "resp_nope", ""); !is404(err) {
		t.Errorf("unknown: %v, want 404", err)
	}
	if err := s.Delete(ctx, "alice", "resp_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "alice", "resp_a", ""); !is404(err) {
		t.Errorf("after delete: %v, want 404", err)
	}
	if err := s.Delete(ctx, "alice", "resp_a"); !is404(err) {
		t.Errorf("second delete: %v, want 404", err)
	}

	// Size bound.
	if err := s.Put(ctx, stored("alice", "resp_big", clk.now(), strings.Repeat("x", 5000))); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big: %v, want ErrTooLarge", err)
	}
	// Count bound: the oldest go first.
	for i := range 5 {
		clk.add(time.Second)
		if err := s.Put(ctx, stored("alice", "resp_"+strconv.Itoa(i), clk.now(), "q")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		_, err := s.Get(ctx, "alice", "resp_"+strconv.Itoa(i), "")
		if kept := i >= 2; kept != (err == nil) {
			t.Errorf("resp_%d: err %v, want kept %v", i, err, kept)
		}
	}
	// TTL.
	clk.add(2 * time.Hour)
	if _, err := s.Get(ctx, "alice", "resp_4", ""); !is404(err) {
		t.Errorf("expired: %v, want 404", err)
	}
	if err := s.Put(ctx, stored("alice", "resp_new", clk.now(), "q")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "alice", "resp_new", ""); err != nil {
		t.Errorf("new after expiry: %v", err)
	}
}

func TestBoltStore(t *testing.T) {
	testStore(t, func(t *testing.T, ret Retention, now func() time.Time) store {
		s, err := OpenBolt(filepath.Join(t.TempDir(), "responses.db"), ret, now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestRedisStore(t *testing.T) {
	testStore(t, func(t *testing.T, ret Retention, now func() time.Time) store {
		r := redistest.New(t)
		return NewRedis(r.Client, r.Prefix+"responses:", ret, now)
	})
}
