package upstreamtest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The richer chat request, answered the way vLLM answers it (with a
// tool parser and guided decoding on): a request with tools and
// tool_choice other than "none" gets one deterministic call to the named
// tool, or to the first, with arguments built from its parameters schema
// (ArgumentsFor) — except that under "auto" a conversation whose last
// message is a tool result gets a text answer; response_format json_object
// or json_schema gets JSON content (valid against the schema); n gets n
// choices; logprobs gets a logprobs object per token.

type richRequest struct {
	Tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
	N           int  `json:"n"`
	Logprobs    bool `json:"logprobs"`
	TopLogprobs int  `json:"top_logprobs"`
}

func (r *richRequest) rich() bool {
	return len(r.Tools) > 0 || r.ResponseFormat != nil && r.ResponseFormat.Type != "text" || r.N > 1 || r.Logprobs
}

// toolToCall is the tool the request makes the mock call, or "".
func (r *genRequest) toolToCall() (name string, params json.RawMessage) {
	if len(r.Tools) == 0 {
		return "", nil
	}
	mode := "auto"
	var named struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(r.ToolChoice, &mode) != nil && json.Unmarshal(r.ToolChoice, &named) == nil && named.Function.Name != "" {
		mode = "function"
	}
	switch mode {
	case "none":
		return "", nil
	case "auto":
		if n := len(r.Messages); n > 0 && r.Messages[n-1].Role == "tool" {
			return "", nil // answers the tool's result in words
		}
	}
	for _, t := range r.Tools {
		if mode != "function" || t.Function.Name == named.Function.Name {
			return t.Function.Name, t.Function.Parameters
		}
	}
	return "", nil
}

// ArgumentsFor is the mock's deterministic JSON value for a JSON Schema:
// every property of an object (required or not), the first enum or const
// value, "mock" for strings, 1 for numbers, true for booleans, one item
// for arrays. It is valid against the schemas tests use (type, properties,
// required, items, enum, const; no combinators).
func ArgumentsFor(schema json.RawMessage) string {
	b, _ := json.Marshal(valueFor(schema, 0))
	return string(b)
}

func valueFor(schema json.RawMessage, depth int) any {
	var s struct {
		Type       any                        `json:"type"`
		Properties map[string]json.RawMessage `json:"properties"`
		Items      json.RawMessage            `json:"items"`
		Enum       []any                      `json:"enum"`
		Const      any                        `json:"const"`
	}
	if json.Unmarshal(schema, &s) != nil || depth > 16 {
		return map[string]any{}
	}
	if s.Const != nil {
		return s.Const
	}
	if len(s.Enum) > 0 {
		return s.Enum[0]
	}
	typ, _ := s.Type.(string)
	if list, ok := s.Type.([]any); ok && len(list) > 0 {
		typ, _ = list[0].(string)
	}
	if typ == "" && s.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "string":
		return "mock"
	case "integer", "number":
		return 1
	case "boolean":
		return true
	case "null":
		return nil
	case "array":
		if len(s.Items) == 0 {
			return []any{}
		}
		return []any{valueFor(s.Items, depth+1)}
	}
	out := map[string]any{}
	keys := make([]string, 0, len(s.Properties))
	for k := range s.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out[k] = valueFor(s.Properties[k], depth+1)
	}
	return out
}

// ToolCallID is the id the mock gives choice i's call for prompt.
func ToolCallID(prompt string, i int) string {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	return fmt.Sprintf("call_%016x%d", h.Sum64(), i)
}

// mockChoice is one choice of a rich answer.
type mockChoice struct {
	tokens []string // text pieces
	call   *mockCall
	finish string
}

type mockCall struct {
	id, name, args string
}

// argFragments splits arguments the way a tool parser streams them.
func argFragments(args string) []string {
	var out []string
	for len(args) > 0 {
		n := min(8, len(args))
		out = append(out, args[:n])
		args = args[n:]
	}
	return out
}

func (s *Server) answerRich(req *genRequest, prompt string, max int) []mockChoice {
	n := max1(req.N)
	out := make([]mockChoice, n)
	tool, params := req.toolToCall()
	for i := range out {
		p := prompt
		if i > 0 {
			p += "#" + strconv.Itoa(i)
		}
		switch {
		case tool != "":
			out[i] = mockChoice{call: &mockCall{id: ToolCallID(prompt, i), name: tool, args: ArgumentsFor(params)}, finish: "tool_calls"}
		case req.ResponseFormat != nil && req.ResponseFormat.Type == "json_schema" && req.ResponseFormat.JSONSchema != nil:
			out[i] = mockChoice{tokens: argFragments(ArgumentsFor(req.ResponseFormat.JSONSchema.Schema)), finish: "stop"}
		case req.ResponseFormat != nil && req.ResponseFormat.Type == "json_object":
			toks, _ := Generate(p, max, req.Stop)
			b, _ := json.Marshal(map[string]string{"answer": strings.Join(toks, "")})
			out[i] = mockChoice{tokens: argFragments(string(b)), finish: "stop"}
		default:
			out[i].tokens, out[i].finish = Generate(p, max, req.Stop)
		}
	}
	return out
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// logprobsFor is the mock's logprobs object for one token.
func logprobsFor(tok string, top int) map[string]any {
	entry := func(t string, lp float64) map[string]any {
		// bytes is an array of the token's UTF-8 byte values, as OpenAI
		// and vLLM send it ([]byte would marshal as base64).
		b := make([]int, len(t))
		for i := range len(t) {
			b[i] = int(t[i])
		}
		return map[string]any{"token": t, "logprob": lp, "bytes": b}
	}
	e := entry(tok, -0.25)
	tops := []any{}
	for k := range top {
		tops = append(tops, entry(tok+strings.Repeat("~", k), -0.25-float64(k)))
	}
	e["top_logprobs"] = tops
	return map[string]any{"content": []any{e}}
}

func (s *Server) generateRich(w http.ResponseWriter, r *http.Request, req *genRequest, prompt string, promptTokens, max int) {
	choices := s.answerRich(req, prompt, max)
	completion := 0
	for _, c := range choices {
		completion += len(c.tokens)
		if c.call != nil {
			completion += 1 + len(argFragments(c.call.args))
		}
	}
	u := usage{PromptTokens: promptTokens, CompletionTokens: completion, TotalTokens: promptTokens + completion}
	created := time.Now().Unix()
	if !req.Stream {
		var list []any
		for i, c := range choices {
			msg := map[string]any{"role": "assistant", "content": strings.Join(c.tokens, ""), "tool_calls": []any{}}
			if c.call != nil {
				msg["content"] = nil
				msg["tool_calls"] = []any{map[string]any{"id": c.call.id, "type": "function",
					"function": map[string]any{"name": c.call.name, "arguments": c.call.args}}}
			}
			choice := map[string]any{"index": i, "message": msg, "finish_reason": c.finish, "logprobs": nil}
			if req.Logprobs && c.call == nil {
				var content []any
				for _, t := range c.tokens {
					content = append(content, logprobsFor(t, req.TopLogprobs)["content"].([]any)...)
				}
				choice["logprobs"] = map[string]any{"content": content}
			}
			list = append(list, choice)
		}
		resp := map[string]any{"id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": req.Model, "choices": list}
		if !s.cfg.OmitUsage {
			resp["usage"] = u
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	_, tokenDelay := s.delays()
	send := func(i int, delta map[string]any, finish any, lp any) bool {
		c := map[string]any{"index": i, "delta": delta, "finish_reason": finish, "logprobs": lp}
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": req.Model, "choices": []any{c}})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return s.wait(r, tokenDelay)
	}
	for i, c := range choices {
		if !send(i, map[string]any{"role": "assistant", "content": ""}, nil, nil) {
			return
		}
		for _, t := range c.tokens {
			var lp any
			if req.Logprobs {
				lp = logprobsFor(t, req.TopLogprobs)
			}
			if !send(i, map[string]any{"content": t}, nil, lp) {
				return
			}
		}
		if c.call != nil {
			first := map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": c.call.id, "type": "function",
				"function": map[string]any{"name": c.call.name, "arguments": ""}}}}
			if !send(i, first, nil, nil) {
				return
			}
			for _, frag := range argFragments(c.call.args) {
				if !send(i, map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": frag}}}}, nil, nil) {
					return
				}
			}
		}
		if !send(i, map[string]any{}, c.finish, nil) {
			return
		}
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !s.cfg.OmitUsage {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": req.Model, "choices": []any{}, "usage": u})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}
