package scheduler

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// TestUpsertRedialsOnNewSession checks that the link is dialled again when
// a worker registers anew with another session token (its handler refuses
// the old one) or URL, and kept when it only registers again.
func TestUpsertRedialsOnNewSession(t *testing.T) {
	var dialled []string
	s, err := New(Config{}, Deps{DialWorker: func(w *task.Registered) Conn {
		dialled = append(dialled, w.URL+" "+w.SessionToken)
		return &scriptConn{url: w.URL}
	}})
	if err != nil {
		t.Fatal(err)
	}
	reg := func(url, token string) *task.Registered {
		return &task.Registered{WorkerID: "w1", URL: url, SessionToken: token, MaxConcurrency: 4,
			Models: []task.ModelVersion{{Name: testModel, Digest: "d"}}}
	}
	steps := []struct{ name, url, token string }{
		{"first registration", "http://a", "t1"},
		{"same session again", "http://a", "t1"},
		{"new session", "http://a", "t2"},
		{"new url", "http://b", "t2"},
	}
	for _, st := range steps {
		s.Upsert(reg(st.url, st.token))
	}
	want := []string{"http://a t1", "http://a t2", "http://b t2"}
	if diff := cmp.Diff(dialled, want); diff != "" {
		t.Errorf("dials (-got +want):\n%s", diff)
	}
	if n := len(s.Workers()); n != 1 {
		t.Errorf("%d workers, want 1", n)
	}
}
