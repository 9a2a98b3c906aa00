package report

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMarkdown(t *testing.T) {
	tests := []struct {
		name  string
		table Table
		rows  [][]any
		want  string
	}{
		{
			name:  "title, alignment and number formats",
			table: Table{Title: "T", Columns: []string{"policy", "p99 ms"}},
			rows:  [][]any{{"rr", 1234.5}, {"lr", 12.345}, {"tg", 0.5}},
			want:  "### T\n\n| policy | p99 ms |\n| --- | ---: |\n| rr | 1234 |\n| lr | 12.3 |\n| tg | 0.50 |\n\n",
		},
		{
			name:  "pipes escaped",
			table: Table{Columns: []string{"a|b"}},
			rows:  [][]any{{"x|y"}},
			want:  "| a\\|b |\n| --- |\n| x\\|y |\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range tt.rows {
				tt.table.AddRow(r...)
			}
			var b strings.Builder
			if err := tt.table.Markdown(&b); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(b.String(), tt.want); d != "" {
				t.Errorf("(-got +want):\n%s", d)
			}
		})
	}
}
