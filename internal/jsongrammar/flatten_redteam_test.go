package jsongrammar

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// refFanSchema is a chain of $defs, each an anyOf of width refs to the next:
// the flattened union of the root has width^levels alternatives, although
// the schema has only ~levels nodes.
func refFanSchema(width, levels int) string {
	var b strings.Builder
	b.WriteString(`{"$ref":"#/$defs/a0","$defs":{`)
	for l := 0; l < levels; l++ {
		if l > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"a%d":`, l)
		if l == levels-1 {
			b.WriteString(`{"type":"integer"}`)
			continue
		}
		b.WriteString(`{"anyOf":[`)
		for i := 0; i < width; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"$ref":"#/$defs/a%d"}`, l+1)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`}}`)
	return b.String()
}

// A worker compiles the client's schema: its cost must stay bounded by the
// schema's size, not by the product of its unions' widths.
func TestRedteamRefFanOutCompileBounded(t *testing.T) {
	s := refFanSchema(25, 6) // 25^5 ≈ 9.8M flattened entries, schema < 4 KB
	if len(s) > 8<<10 {
		t.Fatalf("schema %d bytes", len(s))
	}
	// A guard against the blow-up, not a performance target: the
	// flattened union takes minutes and gigabytes, the bounded compile
	// milliseconds (BenchmarkCompile gives its cost), so the limit sits far
	// above any loaded CI machine's time.
	start := time.Now()
	_, err := Compile([]byte(s), false)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Compile of a %d-byte schema took %s (err %v)", len(s), d, err)
	}
}

// Past MaxAlternatives distinct alternatives the expansion is refused with
// a clear error, and a schema of the largest size is still bounded through
// ForFormat, which the gateway may call before dispatch.
func TestFlattenCapAndForFormatBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"anyOf":[`)
	for i := 0; i < 40; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"anyOf":[`)
		for j := 0; j < 40; j++ {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"type":"integer","minimum":%d}`, i*40+j)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}`)
	_, err := Compile([]byte(b.String()), false)
	if err == nil || !strings.Contains(err.Error(), "exceeds 1000 alternatives") {
		t.Fatalf("1600 distinct alternatives: err %v", err)
	}
	// Shared targets count once: the fan-out schema compiles to one integer.
	g, err := Compile([]byte(refFanSchema(25, 6)), false)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := g.Start().Feed([]byte("42")); !ok || !s.Complete() {
		t.Fatal("42 refused")
	}
	for _, width := range []int{50, 200, 1000} {
		levels := 2
		for len(refFanSchema(width, levels+1)) < MaxSchemaBytes {
			levels++
		}
		s := refFanSchema(width, levels)
		start := time.Now()
		_, err := ForFormat(&task.ResponseFormat{Type: task.FormatJSONSchema, Schema: []byte(s)})
		if d := time.Since(start); d > 10*time.Second { // a blow-up guard, as above
			t.Fatalf("ForFormat of a %d-byte schema (width %d, %d levels) took %s (err %v)", len(s), width, levels, d, err)
		}
	}
}
