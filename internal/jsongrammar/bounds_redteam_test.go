package jsongrammar

import (
	"strings"
	"testing"
)

func accepts(t *testing.T, g *Grammar, doc string) bool {
	t.Helper()
	s, ok := g.Start().Feed([]byte(doc))
	return ok && s.Complete()
}

func mustCompile(t *testing.T, schema string) *Grammar {
	t.Helper()
	g, err := Compile([]byte(schema), false)
	if err != nil {
		t.Fatalf("Compile(%s): %v", schema, err)
	}
	return g
}

// Nested minItems multiply: the shortest value's length must not overflow
// into a small or negative distance.
func TestRedteamMinLengthOverflow(t *testing.T) {
	inner := `{"type":"string","minLength":10000}`
	s := inner
	for i := 0; i < 7; i++ {
		s = `{"type":"array","minItems":1000,"items":` + s + `}`
	}
	g, err := Compile([]byte(s), false)
	if err != nil {
		return // refusing is fine
	}
	if d := g.Start().Dist(); d < 1_000_000 {
		t.Fatalf("shortest value of a schema needing >1e21 bytes has Dist %d (overflow)", d)
	}
}

// Number edges: -0 against exclusiveMinimum 0, integer bounds, huge bounds.
func TestRedteamNumberEdges(t *testing.T) {
	g := mustCompile(t, `{"type":"number","exclusiveMinimum":0}`)
	for _, doc := range []string{"-0", "0", "-0.0", "0.000000"} {
		if accepts(t, g, doc) {
			t.Errorf("exclusiveMinimum 0 accepts %s", doc)
		}
	}
	if !accepts(t, g, "0.5") {
		t.Error("exclusiveMinimum 0 refuses 0.5")
	}
	gi := mustCompile(t, `{"type":"integer","minimum":-3,"maximum":3}`)
	for _, doc := range []string{"4", "-4", "1.0", "1e0", "01", "-"} {
		if accepts(t, gi, doc) {
			t.Errorf("integer [-3,3] accepts %s", doc)
		}
	}
	if !accepts(t, gi, "-0") && !accepts(t, gi, "0") {
		t.Error("integer [-3,3] refuses 0")
	}
	if _, err := Compile([]byte(`{"type":"integer","minimum":1e308}`), false); err == nil {
		t.Error("minimum 1e308 compiled although no generable integer reaches it")
	}
	if _, err := Compile([]byte(`{"type":"number","maximum":1e400}`), false); err == nil {
		t.Error("maximum 1e400 (infinite) accepted")
	}
	gb := mustCompile(t, `{"type":"integer","minimum":-1e308,"maximum":1e308}`)
	if !accepts(t, gb, "9999999999999999") || accepts(t, gb, "99999999999999999") {
		t.Error("integer digits bound not as documented (16)")
	}
}

// A huge enum and a huge maxLength are bounded.
func TestRedteamEnumAndLengthBounds(t *testing.T) {
	vals := make([]string, MaxEnum+1)
	for i := range vals {
		vals[i] = `"v` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `"`
	}
	if _, err := Compile([]byte(`{"enum":[`+strings.Join(vals, ",")+`]}`), false); err == nil {
		t.Error("enum over MaxEnum compiled")
	}
	if _, err := Compile([]byte(`{"type":"string","minLength":1000000}`), false); err == nil {
		t.Error("minLength 1e6 compiled")
	}
	g := mustCompile(t, `{"type":"string","maxLength":1000000000000}`)
	if !accepts(t, g, `"abc"`) {
		t.Error("huge maxLength refuses a short string")
	}
}

// Self-recursive $ref without a base case is refused; with one it
// terminates within MaxValueDepth.
func TestRedteamRecursiveRef(t *testing.T) {
	if _, err := Compile([]byte(`{"$ref":"#"}`), false); err == nil {
		t.Error("$ref # alone compiled")
	}
	if _, err := Compile([]byte(`{"type":"object","properties":{"a":{"$ref":"#"}},"required":["a"]}`), false); err == nil {
		t.Error("required infinite recursion compiled")
	}
	g := mustCompile(t, `{"anyOf":[{"type":"null"},{"type":"array","items":{"$ref":"#"}}]}`)
	deep := strings.Repeat("[", 200) + strings.Repeat("]", 200)
	if accepts(t, g, deep) {
		t.Error("nesting beyond MaxValueDepth accepted")
	}
}
