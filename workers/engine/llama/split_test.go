package llama

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitAttention(t *testing.T) {
	tests := []struct {
		name      string
		positions []int
		parts     int
		want      []int
	}{
		{"one part", []int{5, 6, 7}, 1, []int{0, 3}},
		{"even rows", []int{9, 9, 9, 9}, 2, []int{0, 2, 4}},
		{"one long row", []int{100, 0, 0, 0}, 2, []int{0, 1, 4}},
		{"long row last", []int{0, 0, 0, 100}, 2, []int{0, 4, 4}},
		{"three parts", []int{1, 1, 1, 1, 1, 1}, 3, []int{0, 2, 4, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := &workspace{parts: tt.parts, attSplit: make([]int, tt.parts+1)}
			for _, p := range tt.positions {
				ws.rows = append(ws.rows, row{pos: p})
			}
			ws.splitAttention()
			if diff := cmp.Diff(ws.attSplit, tt.want); diff != "" {
				t.Errorf("split (-got +want):\n%s", diff)
			}
		})
	}
}
