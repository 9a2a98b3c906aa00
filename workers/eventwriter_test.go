package workers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// countingWriter records the writes and flushes an eventWriter makes.
type countingWriter struct {
	*httptest.ResponseRecorder
	writes, flushes int
}

func (w *countingWriter) Write(b []byte) (int, error) {
	w.writes++
	return w.ResponseRecorder.Write(b)
}

func (w *countingWriter) Flush() { w.flushes++ }

var _ http.Flusher = (*countingWriter)(nil)

// TestEventWriterFlushPolicy: a streamed task's events are flushed as they
// come, an event marked More (an unstreamed task's text, a delta whose next
// came in with it) waits for what follows, and the batch's last event is
// written but left for the end of the response.
func TestEventWriterFlushPolicy(t *testing.T) {
	delta := func(i int) task.Event { return task.Event{Index: i, Type: task.EventDelta, Text: "hi", Tokens: 1} }
	done := func(i int) task.Event {
		return task.Event{Index: i, Type: task.EventDone, FinishReason: "stop", Usage: &task.Usage{}}
	}
	more := func(ev task.Event) task.Event { ev.More = true; return ev }
	cases := []struct {
		name            string
		stream          []bool // per task
		events          []task.Event
		writes, flushes int
	}{
		{"one unstreamed task: one write, no flush", []bool{false}, []task.Event{delta(0), done(0)}, 1, 0},
		{"one streamed task: each delta flushed, the end left", []bool{true}, []task.Event{delta(0), delta(0), done(0)}, 3, 2},
		{"two unstreamed tasks: the first end flushed", []bool{false, false}, []task.Event{delta(0), done(0), delta(1), done(1)}, 2, 1},
		{"mixed", []bool{true, false}, []task.Event{delta(0), delta(1), done(1), delta(0), done(0)}, 4, 3},
		{"streamed deltas marked More go with the next event", []bool{true},
			[]task.Event{more(delta(0)), more(delta(0)), delta(0), more(delta(0)), done(0)}, 2, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
			ew := newEventWriter(w, len(tc.stream))
			for _, ev := range tc.events {
				if ev.Type == task.EventDelta && !tc.stream[ev.Index] {
					ev.More = true // as the agent sends an unstreamed task's text
				}
				if err := ew.emit(ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := ew.close(); err != nil {
				t.Fatal(err)
			}
			if w.writes != tc.writes || w.flushes != tc.flushes {
				t.Errorf("%d writes, %d flushes; want %d, %d", w.writes, w.flushes, tc.writes, tc.flushes)
			}
			if got := strings.Count(w.Body.String(), "\n"); got != len(tc.events) {
				t.Errorf("%d event lines written, want %d:\n%s", got, len(tc.events), w.Body.String())
			}
			if err := ew.emit(done(0)); err == nil {
				t.Error("emit after close succeeded")
			}
		})
	}
}
