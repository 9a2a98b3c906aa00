package jsongrammar

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/jsongrammar/schematest"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// schemas are what the SDKs send, and the shapes the recogniser must handle.
var schemas = map[string]string{
	"flat":        `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"}},"required":["name","age","ok"],"additionalProperties":false}`,
	"enum":        `{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"n":{"const":3}},"required":["color","n"],"additionalProperties":false}`,
	"array":       `{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","maxLength":5},"minItems":2,"maxItems":3}},"required":["tags"],"additionalProperties":false}`,
	"nested":      `{"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer","minimum":1,"maximum":99},"email":{"type":"string","format":"email"}},"required":["id","email"],"additionalProperties":false}},"required":["user"],"additionalProperties":false}`,
	"anyOf":       `{"type":"object","properties":{"v":{"anyOf":[{"type":"string","minLength":2},{"type":"number","minimum":0.5,"exclusiveMaximum":1},{"type":"null"}]}},"required":["v"],"additionalProperties":false}`,
	"ref":         `{"type":"object","properties":{"root":{"$ref":"#/$defs/node"}},"required":["root"],"additionalProperties":false,"$defs":{"node":{"type":"object","properties":{"val":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["val","kids"],"additionalProperties":false}}}`,
	"definitions": `{"$ref":"#/definitions/P","definitions":{"P":{"type":"object","properties":{"x":{"type":["string","null"]}},"required":["x"],"additionalProperties":false}}}`,
	// zod 4 through openai's zodResponseFormat: z.object({ n: z.number().int(), s: z.string(), opt: z.string().nullable() })
	"zod4": `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"n":{"type":"integer","minimum":-9007199254740991,"maximum":9007199254740991},"s":{"type":"string"},"opt":{"anyOf":[{"type":"string"},{"type":"null"}]}},"required":["n","s","opt"],"additionalProperties":false}`,
	// The AI SDK's generateObject (draft 7 through zod-to-json-schema).
	"aisdk":     `{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"recipe":{"type":"object","properties":{"name":{"type":"string"},"steps":{"type":"array","items":{"type":"string"}}},"required":["name","steps"],"additionalProperties":false}},"required":["recipe"],"additionalProperties":false}`,
	"optional":  `{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer","exclusiveMinimum":10,"maximum":12},"c":{"type":"boolean"}},"required":["b"]}`,
	"bounds":    `{"type":"object","properties":{"p":{"type":"number","minimum":-1.25,"maximum":-1.2},"q":{"type":"integer","exclusiveMinimum":-3,"exclusiveMaximum":-1}},"required":["p","q"],"additionalProperties":false}`,
	"prefix":    `{"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],"items":false,"minItems":2}`,
	"free":      `{"type":"object","additionalProperties":{"type":"integer"}}`,
	"rootnum":   `{"type":"number","minimum":3,"maximum":4}`,
	"stringlen": `{"type":"string","minLength":3,"maxLength":4}`,
}

// generate walks g with random bytes, closing the document on its shortest
// path once the budget of bytes runs short, and returns the text.
func generate(t testing.TB, g *Grammar, rng *rand.Rand, budget int) []byte {
	s := g.Start()
	var out []byte
	var next State
	for !s.Done() {
		if s.Complete() && rng.IntN(4) == 0 {
			break
		}
		left := budget - len(out)
		var ok []byte
		for b := 0; b < 256; b++ {
			if s.StepInto(&next, byte(b)) {
				if d := next.Dist(); d >= 0 && d <= left-1 {
					ok = append(ok, byte(b))
				}
			}
		}
		if len(ok) == 0 {
			if s.Complete() {
				break
			}
			t.Fatalf("no byte continues %q (dist %d, %d left)", out, s.Dist(), left)
		}
		b := ok[rng.IntN(len(ok))]
		s.StepInto(&next, b)
		s, next = next, s
		out = append(out, b)
	}
	return out
}

func TestGenerateValidates(t *testing.T) {
	for name, schema := range schemas {
		t.Run(name, func(t *testing.T) {
			g, err := Compile([]byte(schema), false)
			if err != nil {
				t.Fatal(err)
			}
			for seed := uint64(0); seed < 200; seed++ {
				rng := rand.New(rand.NewPCG(seed, 7))
				budget := g.Start().Dist() + int(seed%50)
				doc := generate(t, g, rng, budget)
				if len(doc) > budget {
					t.Fatalf("seed %d: %d bytes over a budget of %d: %q", seed, len(doc), budget, doc)
				}
				if err := schematest.Validate([]byte(schema), doc); err != nil {
					t.Fatalf("seed %d: %q: %v", seed, doc, err)
				}
			}
		})
	}
}

func TestAcceptReject(t *testing.T) {
	tests := []struct {
		name, schema, doc string
		ok                bool
	}{
		{"flat ok", schemas["flat"], `{"name":"a","age":-3,"ok":true}`, true},
		{"flat order", schemas["flat"], `{"age":3,"name":"a","ok":true}`, false},
		{"flat missing", schemas["flat"], `{"name":"a","age":3}`, false},
		{"flat extra", schemas["flat"], `{"name":"a","age":3,"ok":true,"x":1}`, false},
		{"flat float", schemas["flat"], `{"name":"a","age":3.5,"ok":true}`, false},
		{"enum ok", schemas["enum"], `{"color":"green","n":3}`, true},
		{"enum bad", schemas["enum"], `{"color":"pink","n":3}`, false},
		{"array few", schemas["array"], `{"tags":["a"]}`, false},
		{"array many", schemas["array"], `{"tags":["a","b","c","d"]}`, false},
		{"array long", schemas["array"], `{"tags":["abcdef","b"]}`, false},
		{"array ws", schemas["array"], `{ "tags" : [ "a" , "b" ] }`, false}, // compact only,
		{"bounds id", schemas["nested"], `{"user":{"id":100,"email":"x"}}`, false},
		{"bounds id ok", schemas["nested"], `{"user":{"id":99,"email":"x"}}`, true},
		{"zod int max", schemas["zod4"], `{"n":9007199254740991,"s":"","opt":null}`, true},
		{"zod int over", schemas["zod4"], `{"n":9007199254740992,"s":"","opt":null}`, false},
		{"zod int under", schemas["zod4"], `{"n":-9007199254740992,"s":"","opt":null}`, false},
		{"anyOf excl", schemas["anyOf"], `{"v":1}`, false},
		{"anyOf num", schemas["anyOf"], `{"v":0.75}`, true},
		{"anyOf str", schemas["anyOf"], `{"v":"ab"}`, true},
		{"anyOf short", schemas["anyOf"], `{"v":"a"}`, false},
		{"ref", schemas["ref"], `{"root":{"val":1,"kids":[{"val":2,"kids":[]}]}}`, true},
		{"utf8", schemas["flat"], "{\"name\":\"h\xc3\xa9\",\"age\":1,\"ok\":false}", true},
		{"bad utf8", schemas["flat"], "{\"name\":\"h\xc3\",\"age\":1,\"ok\":false}", false},
		{"surrogate", schemas["flat"], `{"name":"\ud800","age":1,"ok":false}`, false},
		{"escape", schemas["flat"], `{"name":"a\n\u00e9","age":1,"ok":false}`, true},
		{"control", schemas["flat"], "{\"name\":\"a\nb\",\"age\":1,\"ok\":false}", false},
		{"leading zero", schemas["flat"], `{"name":"a","age":01,"ok":false}`, false},
		{"trailing", schemas["flat"], `{"name":"a","age":1,"ok":false} `, false},
		{"excl int", schemas["optional"], `{"b":10}`, false},
		{"excl int ok", schemas["optional"], `{"a":"x","b":11}`, true},
		{"bounds neg", schemas["bounds"], `{"p":-1.21,"q":-2}`, true},
		{"bounds neg out", schemas["bounds"], `{"p":-1.26,"q":-2}`, false},
		{"prefix", schemas["prefix"], `[1,"a"]`, true},
		{"prefix more", schemas["prefix"], `[1,"a",2]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Compile([]byte(tt.schema), false)
			if err != nil {
				t.Fatal(err)
			}
			s, alive := g.Start().Feed([]byte(tt.doc))
			if got := alive && s.Complete(); got != tt.ok {
				t.Fatalf("accepted = %v, want %v", got, tt.ok)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ name, schema, want string }{
		{"pattern strict", `{"type":"string","pattern":"^a"}`, `"pattern"`},
		{"addl strict", `{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`, "additionalProperties"},
		{"bad ref", `{"$ref":"#/$defs/nope"}`, "does not resolve"},
		{"remote ref", `{"$ref":"http://x/y"}`, "not local"},
		{"recursion only", `{"$ref":"#/$defs/a","$defs":{"a":{"type":"object","properties":{"a":{"$ref":"#/$defs/a"}},"required":["a"],"additionalProperties":false}}}`, "recurses"},
		{"bounds empty", `{"type":"integer","minimum":2,"maximum":1}`, "no value"},
		{"bad json", `{"type":`, "not valid JSON"},
		{"shortest too long", `{"type":"array","minItems":1000,"items":{"type":"array","minItems":1000,"items":{"type":"string","minLength":10}}}`, "shortest value"},
		{"unknown type", `{"type":"date"}`, "unknown type"},
		{"huge", `{"type":"string","description":"` + strings.Repeat("x", MaxSchemaBytes) + `"}`, "bytes"},
		{"deep", strings.Repeat(`{"type":"array","items":`, 40) + `{}` + strings.Repeat(`}`, 40), "nested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile([]byte(tt.schema), true)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := Compile([]byte(`{"type":"string","pattern":"^a"}`), false); err != nil {
		t.Fatalf("without strict pattern is ignored, got %v", err)
	}
}

func TestForFormat(t *testing.T) {
	if g, err := ForFormat(nil); g != nil || err != nil {
		t.Fatal("nil format")
	}
	if g, err := ForFormat(&task.ResponseFormat{Type: "text"}); g != nil || err != nil {
		t.Fatal("text format")
	}
	g, err := ForFormat(&task.ResponseFormat{Type: "json_object"})
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := g.Start().Feed([]byte(`[1]`)); ok && s.Complete() {
		t.Fatal("json_object accepted an array")
	}
	if s, ok := g.Start().Feed([]byte(`{"a":[1,{"b":null}],"c":-0.5}`)); !ok || !s.Complete() {
		t.Fatal("json_object refused an object")
	}
	if _, err := ForFormat(&task.ResponseFormat{Type: "xml"}); err == nil {
		t.Fatal("unknown type accepted")
	}
}

func FuzzGrammar(f *testing.F) {
	names := []string{"flat", "enum", "array", "nested", "anyOf", "ref", "zod4", "bounds", "prefix", "free"}
	for i, n := range names {
		f.Add(uint8(i), []byte(`{"name":"a","age":1,"ok":true}`))
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		g, _ := Compile([]byte(schemas[n]), false)
		f.Add(uint8(i), generate(f, g, rng, 80))
	}
	f.Add(uint8(255), []byte(`{"a":{"b":[true,false,null,"x\u0041"]}}`))
	grammars := make([]*Grammar, len(names))
	for i, n := range names {
		grammars[i], _ = Compile([]byte(schemas[n]), false)
	}
	f.Fuzz(func(t *testing.T, which uint8, doc []byte) {
		g, schema := JSONObject(), `{"type":"object"}`
		if int(which) < len(names) {
			g, schema = grammars[which], schemas[names[which]]
		}
		s, alive := g.Start().Feed(doc)
		if !alive {
			return
		}
		if d := s.Dist(); d < 0 {
			t.Fatalf("alive prefix %q has no completion", doc)
		}
		if !s.Complete() {
			return
		}
		if !json.Valid(doc) {
			t.Fatalf("accepted invalid JSON %q", doc)
		}
		if err := schematest.Validate([]byte(schema), doc); err != nil {
			t.Fatalf("accepted %q: %v", doc, err)
		}
	})
}

// BenchmarkCompile is the cost of checking a request's schema (ForFormat).
func BenchmarkCompile(b *testing.B) {
	for _, name := range []string{"zod4", "ref", "aisdk"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile([]byte(schemas[name]), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzCompile: any schema text compiles or is refused without panicking,
// and with strict, what a compiled schema generates validates against it.
func FuzzCompile(f *testing.F) {
	for _, s := range schemas {
		f.Add([]byte(s), uint64(1))
	}
	f.Add([]byte(`{"type":"string","enum":["a",1]}`), uint64(2))
	f.Add([]byte(`{"type":"integer","enum":[1,1.5,2]}`), uint64(3))
	f.Fuzz(func(t *testing.T, schema []byte, seed uint64) {
		g, err := Compile(schema, true)
		if err != nil || g.Start().Dist() > 4096 {
			return // refused, or too long to generate byte by byte here
		}
		rng := rand.New(rand.NewPCG(seed, 3))
		doc := generate(t, g, rng, g.Start().Dist()+int(seed%32))
		if err := schematest.Validate(schema, doc); err != nil {
			t.Fatalf("%s generated %q: %v", schema, doc, err)
		}
	})
}

// TestBounds: recursion through $ref stops at MaxValueDepth nested values,
// and an enum wider than the readings a state keeps still generates
// valid values.
func TestBounds(t *testing.T) {
	g, err := Compile([]byte(schemas["ref"]), true)
	if err != nil {
		t.Fatal(err)
	}
	deep := func(n int) string {
		return `{"root":` + strings.Repeat(`{"val":1,"kids":[`, n) + `{"val":1,"kids":[]}` + strings.Repeat(`]}`, n) + `}`
	}
	if s, ok := g.Start().Feed([]byte(deep(10))); !ok || !s.Complete() {
		t.Fatal("10 levels refused")
	}
	if _, ok := g.Start().Feed([]byte(deep(MaxValueDepth))); ok {
		t.Fatalf("%d levels accepted", MaxValueDepth)
	}
	var vals []string
	for i := range 200 {
		vals = append(vals, fmt.Sprintf(`"v%03d"`, i))
	}
	wide := `{"enum":[` + strings.Join(vals, ",") + `]}`
	g, err = Compile([]byte(wide), true)
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(50) {
		doc := generate(t, g, rand.New(rand.NewPCG(seed, 9)), 10)
		if err := schematest.Validate([]byte(wide), doc); err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
	}
}
