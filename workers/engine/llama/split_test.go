package llama

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitRows(t *testing.T) {
	a, b, c := &kvCache{}, &kvCache{}, &kvCache{}
	tests := []struct {
		name  string
		rows  []row // a row without a cache is a sequence of its own
		parts int
		want  []int
	}{
		{"one part", []row{{pos: 5}, {pos: 6}, {pos: 7}}, 1, []int{0, 3}},
		{"even rows", []row{{pos: 9}, {pos: 9}, {pos: 9}, {pos: 9}}, 2, []int{0, 2, 4}},
		{"one long row", []row{{pos: 500}, {pos: 0}, {pos: 0}, {pos: 0}}, 2, []int{0, 1, 4}},
		{"long row last", []row{{pos: 0}, {pos: 0}, {pos: 0}, {pos: 500}}, 2, []int{0, 3, 4}},
		{"three parts", []row{{pos: 1}, {pos: 1}, {pos: 1}, {pos: 1}, {pos: 1}, {pos: 1}}, 3, []int{0, 2, 4, 6}},
		{"a prefill stays whole", []row{{pos: 0, kv: a}, {pos: 1, kv: a}, {pos: 2, kv: a}, {pos: 3, kv: b}}, 2, []int{0, 3, 4}},
		{"one sequence", []row{{pos: 0, kv: a}, {pos: 1, kv: a}, {pos: 2, kv: a}, {pos: 3, kv: a}}, 2, []int{0, 4, 4}},
		{"cut after a prefill", []row{{pos: 9, kv: c}, {pos: 0, kv: a}, {pos: 1, kv: a}, {pos: 9, kv: b}}, 2, []int{0, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.rows {
				if tt.rows[i].kv == nil {
					tt.rows[i].kv = &kvCache{} // a sequence of its own
				}
			}
			bounds := make([]int, tt.parts+1)
			splitRows(bounds, tt.rows)
			if diff := cmp.Diff(bounds, tt.want); diff != "" {
				t.Errorf("bounds (-got +want):\n%s", diff)
			}
		})
	}
}
