package llama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/jsongrammar"
	"github.com/tollgate-ai/tollgate/internal/jsongrammar/schematest"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// structuredSchemas are what SDKs send for structured output.
var structuredSchemas = []struct{ name, schema string }{
	{"flat", `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"}},"required":["name","age","ok"],"additionalProperties":false}`},
	{"enum", `{"type":"object","properties":{"mood":{"type":"string","enum":["happy","sad"]}},"required":["mood"],"additionalProperties":false}`},
	{"array", `{"type":"object","properties":{"words":{"type":"array","items":{"type":"string","minLength":1},"minItems":1,"maxItems":3}},"required":["words"],"additionalProperties":false}`},
	{"nested", `{"type":"object","properties":{"pet":{"type":"object","properties":{"kind":{"type":"string"},"legs":{"type":"integer","minimum":0,"maximum":8}},"required":["kind","legs"],"additionalProperties":false}},"required":["pet"],"additionalProperties":false}`},
	{"anyOf", `{"type":"object","properties":{"v":{"anyOf":[{"type":"string"},{"type":"number","minimum":0,"maximum":1},{"type":"null"}]}},"required":["v"],"additionalProperties":false}`},
	{"ref", `{"type":"object","properties":{"a":{"$ref":"#/$defs/pt"},"b":{"$ref":"#/$defs/pt"}},"required":["a","b"],"additionalProperties":false,"$defs":{"pt":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"],"additionalProperties":false}}}`},
	{"zod4", `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"count":{"type":"integer","minimum":-9007199254740991,"maximum":9007199254740991},"title":{"type":"string"},"note":{"anyOf":[{"type":"string"},{"type":"null"}]}},"required":["count","title","note"],"additionalProperties":false}`},
}

func structuredTask(rf *task.ResponseFormat, maxTokens int, temp float64, seed int64) *task.Task {
	return &task.Task{Kind: task.KindChat, Model: "stories260K", MaxTokens: maxTokens, Temperature: temp, Seed: &seed,
		Messages:       []task.Message{{Role: "user", Content: "Tell me about a cat as JSON."}},
		Stop:           []string{"}", "\""}, // ignored while a format is active
		ResponseFormat: rf}
}

func generateStructured(t *testing.T, e *Engine, tk *task.Task) (string, task.Result) {
	t.Helper()
	var b strings.Builder
	res, err := e.Generate(context.Background(), tk, func(d task.Delta) error {
		b.WriteString(d.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), res
}

func TestStructuredOutputValidates(t *testing.T) {
	e := openTestEngine(t, Options{})
	formats := []struct {
		name, schema string
		rf           *task.ResponseFormat
	}{{"json_object", `{"type":"object"}`, &task.ResponseFormat{Type: task.FormatJSONObject}}}
	for _, s := range structuredSchemas {
		formats = append(formats, struct {
			name, schema string
			rf           *task.ResponseFormat
		}{s.name, s.schema, &task.ResponseFormat{Type: task.FormatJSONSchema, Name: s.name, Schema: json.RawMessage(s.schema), Strict: true}})
	}
	for _, f := range formats {
		for _, maxTokens := range []int{24, 64, 0} {
			for _, temp := range []float64{0, 0.8, 1.5} {
				for seed := int64(1); seed <= 3; seed++ {
					if temp == 0 && seed > 1 {
						continue
					}
					t.Run(fmt.Sprintf("%s/max=%d/t=%v/seed=%d", f.name, maxTokens, temp, seed), func(t *testing.T) {
						text, res := generateStructured(t, e, structuredTask(f.rf, maxTokens, temp, seed))
						if g, _ := jsongrammar.ForFormat(f.rf); maxTokens > 0 && g.Start().Dist() > maxTokens && res.FinishReason == "length" {
							// The shortest document is longer than max_tokens in
							// bytes; it fits only if the vocabulary has long
							// enough tokens for it, else the answer is cut.
							t.Logf("cut at max_tokens %d: %q", maxTokens, text)
							return
						}
						if err := schematest.Validate([]byte(f.schema), []byte(text)); err != nil {
							t.Fatalf("%q: %v", text, err)
						}
						if res.FinishReason != "stop" {
							t.Errorf("finish_reason %q, want stop", res.FinishReason)
						}
						if maxTokens > 0 && res.CompletionTokens > maxTokens {
							t.Errorf("%d tokens, more than max_tokens %d", res.CompletionTokens, maxTokens)
						}
					})
				}
			}
		}
	}
}

func TestStructuredOutputDeterministic(t *testing.T) {
	e := openTestEngine(t, Options{})
	rf := &task.ResponseFormat{Type: task.FormatJSONSchema, Schema: json.RawMessage(structuredSchemas[0].schema), Strict: true}
	a, _ := generateStructured(t, e, structuredTask(rf, 64, 0.8, 42))
	b, _ := generateStructured(t, e, structuredTask(rf, 64, 0.8, 42))
	if a != b {
		t.Fatalf("same seed, different output: %q vs %q", a, b)
	}
}

func TestStructuredOutputBadSchema(t *testing.T) {
	e := openTestEngine(t, Options{})
	for _, rf := range []*task.ResponseFormat{
		{Type: task.FormatJSONSchema, Schema: json.RawMessage(`{"type":"string","pattern":"^a"}`), Strict: true},
		{Type: task.FormatJSONSchema, Schema: json.RawMessage(`{"$ref":"#/$defs/x"}`)},
		{Type: "yaml"},
	} {
		_, err := e.Generate(context.Background(), structuredTask(rf, 16, 0, 1), func(task.Delta) error { return nil })
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Param != "response_format" {
			t.Fatalf("err = %v, want a 400 naming response_format", err)
		}
	}
}

func TestStructuredCapabilities(t *testing.T) {
	e := openTestEngine(t, Options{})
	v := e.Models()[0]
	if !v.Has(task.CapJSONObject) || !v.Has(task.CapJSONSchema) {
		t.Fatalf("capabilities %v", v.Capabilities)
	}
}

// TestStructuredOutputEdges: a completion from an empty prompt (its first
// token follows BOS, which drops a leading space), top_p sampling, and a
// schema whose root is not an object.
func TestStructuredOutputEdges(t *testing.T) {
	e := openTestEngine(t, Options{})
	obj := &task.ResponseFormat{Type: task.FormatJSONObject}
	num := `{"type":"integer","minimum":10,"maximum":20}`
	cases := []struct {
		name   string
		tk     *task.Task
		schema string
	}{
		{"empty prompt", &task.Task{Kind: task.KindCompletion, Model: "stories260K", MaxTokens: 40, ResponseFormat: obj}, `{"type":"object"}`},
		{"top_p", &task.Task{Kind: task.KindCompletion, Model: "stories260K", Prompt: "Once upon a time", MaxTokens: 40, Temperature: 1, TopP: 0.9, Seed: new(int64), ResponseFormat: obj}, `{"type":"object"}`},
		{"integer root", &task.Task{Kind: task.KindCompletion, Model: "stories260K", Prompt: "Lily was", MaxTokens: 8,
			ResponseFormat: &task.ResponseFormat{Type: task.FormatJSONSchema, Schema: json.RawMessage(num)}}, num},
		{"string root", &task.Task{Kind: task.KindCompletion, Model: "stories260K", Prompt: "Lily was", MaxTokens: 12, Temperature: 1,
			ResponseFormat: &task.ResponseFormat{Type: task.FormatJSONSchema, Schema: json.RawMessage(`{"type":"string","minLength":4,"maxLength":6}`)}}, `{"type":"string","minLength":4,"maxLength":6}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text, res := generateStructured(t, e, c.tk)
			if err := schematest.Validate([]byte(c.schema), []byte(text)); err != nil {
				t.Fatalf("%q (%s): %v", text, res.FinishReason, err)
			}
		})
	}
}

// TestStructuredConcurrent: constrained sequences sharing batches (and the
// vocabulary trie) give what each gives alone.
func TestStructuredConcurrent(t *testing.T) {
	e := openTestEngine(t, Options{MaxNumSeqs: 8})
	rf := &task.ResponseFormat{Type: task.FormatJSONSchema, Schema: json.RawMessage(structuredSchemas[3].schema), Strict: true}
	alone := make([]string, 8)
	for i := range alone {
		alone[i], _ = generateStructured(t, e, structuredTask(rf, 64, 1, int64(i)))
	}
	together := make([]string, 8)
	var wg sync.WaitGroup
	for i := range together {
		wg.Go(func() {
			var b strings.Builder
			if _, err := e.Generate(context.Background(), structuredTask(rf, 64, 1, int64(i)), func(d task.Delta) error {
				b.WriteString(d.Text)
				return nil
			}); err != nil {
				t.Error(err)
			}
			together[i] = b.String()
		})
	}
	wg.Wait()
	if diff := cmp.Diff(together, alone); diff != "" {
		t.Fatalf("batched (-got +want):\n%s", diff)
	}
}
