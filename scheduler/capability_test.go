package scheduler

import (
	"testing"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// addCaps registers worker id serving testModel with caps.
func (h *harness) addCaps(id string, caps ...task.Capability) *scriptConn {
	reg := &task.Registered{WorkerID: id, URL: "http://" + id, MaxConcurrency: 4,
		Models: []task.ModelVersion{{Name: testModel, Digest: testDigest, Capabilities: caps}}}
	h.s.Upsert(reg)
	h.beat(id, task.Load{})
	return h.conns[reg.URL]
}

func toolTask(id string) *task.Task {
	t := chat(id)
	t.Tools = []task.Tool{{Type: "function", Function: task.FunctionDef{Name: "f"}}}
	return t
}

// A task needing tools goes only to the worker that declares them, however
// much better the others score; a plain task goes anywhere.
func TestCapabilityRouting(t *testing.T) {
	h := newHarness(t, Config{})
	plainConns := []*scriptConn{h.addCaps("w-plain-1"), h.addCaps("w-plain-2"), h.addCaps("w-json", task.CapJSONObject)}
	tools := h.addCaps("w-tools", task.CapTools, task.CapN)
	for i := range 20 {
		tk := toolTask("t" + string(rune('a'+i)))
		if i%2 == 1 {
			tk.N = 2
		}
		if err := h.s.CheckCapabilities(tk); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.submit(tk); err != nil {
			t.Fatal(err)
		}
	}
	if n := tools.tasks(); n == 0 { // its 4 slots started; the rest queue behind them
		t.Errorf("tools worker got %d tool tasks", n)
	}
	for _, c := range plainConns {
		if n := c.tasks(); n != 0 {
			t.Errorf("%s got %d tool tasks", c.url, n)
		}
	}
}

func TestCheckCapabilities(t *testing.T) {
	h := newHarness(t, Config{})
	h.addCaps("w1", task.CapTools)
	h.addCaps("w2", task.CapJSONSchema)
	cases := []struct {
		name   string
		mutate func(*task.Task)
		param  string // "" means allowed
	}{
		{"plain", func(*task.Task) {}, ""},
		{"tools", func(t *task.Task) { t.Tools = []task.Tool{{Type: "function"}} }, ""},
		{"tool history only", func(t *task.Task) { t.Messages = append(t.Messages, task.Message{Role: "tool", ToolCallID: "c"}) }, ""},
		{"json_schema", func(t *task.Task) { t.ResponseFormat = &task.ResponseFormat{Type: task.FormatJSONSchema} }, ""},
		{"json_object", func(t *task.Task) { t.ResponseFormat = &task.ResponseFormat{Type: task.FormatJSONObject} }, "response_format"},
		{"logprobs", func(t *task.Task) { t.Logprobs = true }, "logprobs"},
		{"n", func(t *task.Task) { t.N = 3 }, "n"},
		{"image", func(t *task.Task) {
			t.Messages[0].Parts = []byte(`[{"type":"image_url","image_url":{"url":"https://x"}}]`)
		}, "messages"},
		// Each is served, but never by one worker: still refused.
		{"tools and json_schema", func(t *task.Task) {
			t.Tools = []task.Tool{{Type: "function"}}
			t.ResponseFormat = &task.ResponseFormat{Type: task.FormatJSONSchema}
		}, "tools"},
		{"unknown model passes to 404", func(t *task.Task) { t.Model = "other"; t.N = 2 }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk := chat("r")
			c.mutate(tk)
			err := h.s.CheckCapabilities(tk)
			if c.param == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			ae, ok := err.(*apierr.Error)
			if !ok || ae.Status != 400 || ae.Code != CodeUnsupportedParameter || ae.Param != c.param {
				t.Fatalf("err = %#v, want 400 unsupported_parameter param %q", err, c.param)
			}
		})
	}
	err := h.s.CheckCapabilities(func() *task.Task { tk := chat("r"); tk.Logprobs = true; return tk }())
	if want := "Model 'llama3-8b' does not support 'logprobs'."; err == nil || err.(*apierr.Error).Message != want {
		t.Errorf("message %v, want %q", err, want)
	}
}

// A capable worker that is down leaves a tool task without a candidate:
// the cycle refuses it (503), never sends it to an incapable worker.
func TestCapabilityFilterNoFallback(t *testing.T) {
	h := newHarness(t, Config{})
	plain := h.addCaps("w-plain")
	h.addCaps("w-tools", task.CapTools)
	h.s.Remove("w-tools")
	if _, _, err := h.submit(toolTask("x")); err == nil {
		t.Fatal("tool task accepted with no capable worker")
	}
	if plain.tasks() != 0 {
		t.Error("tool task sent to a worker without tools")
	}
}
