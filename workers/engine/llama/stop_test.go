package llama

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func TestStopWriter(t *testing.T) {
	tests := []struct {
		name     string
		stops    []string
		pieces   []string
		want     []task.Delta // emitted deltas, flush included
		wantStop bool
	}{
		{name: "no stops streams every piece", pieces: []string{"a", "b"},
			want: []task.Delta{{Text: "a", Tokens: 1}, {Text: "b", Tokens: 1}}},
		{name: "stop inside one piece", stops: []string{"END"}, pieces: []string{"ab", "cENDx"},
			want: []task.Delta{{Text: "ab", Tokens: 1}, {Text: "c", Tokens: 1}}, wantStop: true},
		{name: "stop across pieces is never partly emitted", stops: []string{"\nUser:"}, pieces: []string{"hi", "\n", "Us", "er", ":", "x"},
			want: []task.Delta{{Text: "hi", Tokens: 1}}, wantStop: true},
		{name: "held prefix released when it diverges", stops: []string{"\nUser:"}, pieces: []string{"hi", "\n", "Us", "ed"},
			want: []task.Delta{{Text: "hi", Tokens: 1}, {Text: "\nUsed", Tokens: 3}}},
		{name: "held prefix flushed at the end", stops: []string{"STOP"}, pieces: []string{"a", "ST"},
			want: []task.Delta{{Text: "a", Tokens: 1}, {Text: "ST", Tokens: 1}}},
		{name: "earliest of several stops wins", stops: []string{"cd", "b"}, pieces: []string{"abcd"},
			want: []task.Delta{{Text: "a", Tokens: 1}}, wantStop: true},
		{name: "stop at the very start emits nothing", stops: []string{"x"}, pieces: []string{"x"}, wantStop: true},
		{name: "incomplete utf-8 is held", pieces: []string{"caf", "\xc3", "\xa9!"},
			want: []task.Delta{{Text: "caf", Tokens: 1}, {Text: "é!", Tokens: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []task.Delta
			w := newStopWriter(tt.stops, func(d task.Delta) error { got = append(got, d); return nil })
			stopped := false
			for _, p := range tt.pieces {
				if err := w.write(p); errors.Is(err, errStopped) {
					stopped = true
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if !stopped {
				if err := w.flush(); err != nil {
					t.Fatal(err)
				}
			}
			if stopped != tt.wantStop {
				t.Errorf("stopped = %t, want %t", stopped, tt.wantStop)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("deltas (-got +want):\n%s", diff)
			}
		})
	}
}

// FuzzStopWriter checks, for one stop sequence and any split of the text
// into pieces, that the emitted text is exactly the text before the first
// occurrence of the stop (or all of it).
func FuzzStopWriter(f *testing.F) {
	f.Add("hello\nUser: hi", "\nUser:", uint64(0x1234))
	f.Add("aaab", "aab", uint64(7))
	f.Add("café", "é", uint64(1))
	f.Fuzz(func(t *testing.T, text, stop string, cuts uint64) {
		if stop == "" {
			return
		}
		var got strings.Builder
		w := newStopWriter([]string{stop}, func(d task.Delta) error { got.WriteString(d.Text); return nil })
		stopped := false
		for start := 0; start < len(text) && !stopped; {
			n := 1 + int(cuts%4)
			cuts = cuts/4 | cuts<<62
			end := min(start+n, len(text))
			if err := w.write(text[start:end]); errors.Is(err, errStopped) {
				stopped = true
			} else if err != nil {
				t.Fatal(err)
			}
			start = end
		}
		if !stopped {
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
		}
		want := text
		if i := strings.Index(text, stop); i >= 0 {
			want = text[:i]
		}
		if got.String() != want || stopped != (len(want) < len(text)) {
			t.Fatalf("emitted %q (stopped %t), want %q", got.String(), stopped, want)
		}
	})
}
