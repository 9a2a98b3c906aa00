package mockupstream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/valyala/fasthttp"
)

// serve runs one request through the handler in memory.
func serve(t testing.TB, s *Server, method, path, body string) (status int, contentType string, out []byte) {
	t.Helper()
	var rc fasthttp.RequestCtx
	rc.Request.Header.SetMethod(method)
	rc.Request.SetRequestURI(path)
	rc.Request.SetBodyString(body)
	s.Handler()(&rc)
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := rc.Response.BodyWriteTo(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	return rc.Response.StatusCode(), string(rc.Response.Header.ContentType()), buf.Bytes()
}

type usage struct {
	Prompt     int `json:"prompt_tokens"`
	Completion int `json:"completion_tokens"`
	Total      int `json:"total_tokens"`
}

type reply struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

// sse parses an event stream into its JSON data payloads and whether it
// ended with [DONE].
func sse(t *testing.T, b []byte) (events []reply, done bool) {
	t.Helper()
	for _, line := range strings.Split(string(b), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var r reply
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.Fatalf("chunk is not JSON: %v: %s", err, data)
		}
		events = append(events, r)
	}
	return events, done
}

func TestGenerate(t *testing.T) {
	s := newServer(withDefaults(Config{Tokens: 5, TokenBytes: 3}))
	for _, tc := range []struct {
		name       string
		path, body string
		wantText   string
		wantFinish string
		wantUsage  bool
		stream     bool
	}{
		{"chat json", "/v1/chat/completions", `{"model":"mock-llm","messages":[{"role":"user","content":"hi"}]}`, strings.Repeat(" xx", 5), "stop", true, false},
		{"chat json max_tokens", "/v1/chat/completions", `{"model":"mock-llm","messages":[{}],"max_tokens":2}`, " xx xx", "length", true, false},
		{"completion json", "/v1/completions", `{"model":"mock-llm","prompt":"hi"}`, strings.Repeat(" xx", 5), "stop", true, false},
		{"chat stream with usage", "/v1/chat/completions", `{"model":"mock-llm","messages":[{}],"stream":true,"stream_options":{"include_usage":true}}`, strings.Repeat(" xx", 5), "stop", true, true},
		{"chat stream without usage", "/v1/chat/completions", `{"model":"mock-llm","messages":[{}],"stream":true}`, strings.Repeat(" xx", 5), "stop", false, true},
		{"completion stream", "/v1/completions", `{"model":"mock-llm","prompt":["a"],"stream":true,"max_completion_tokens":1,"stream_options":{"include_usage":true}}`, " xx", "length", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ctype, body := serve(t, s, "POST", tc.path, tc.body)
			if status != 200 {
				t.Fatalf("status %d: %s", status, body)
			}
			var text, finish string
			var u *usage
			if tc.stream {
				if ctype != "text/event-stream" {
					t.Errorf("content type %q", ctype)
				}
				events, done := sse(t, body)
				if !done {
					t.Error("stream does not end with data: [DONE]")
				}
				for _, ev := range events {
					for _, c := range ev.Choices {
						text += c.Text + c.Delta.Content
						if c.FinishReason != nil {
							finish = *c.FinishReason
						}
					}
					if ev.Usage != nil {
						u = ev.Usage
						if len(ev.Choices) != 0 {
							t.Error("usage chunk has choices")
						}
					}
				}
			} else {
				var r reply
				if err := json.Unmarshal(body, &r); err != nil {
					t.Fatalf("body is not JSON: %v: %s", err, body)
				}
				c := r.Choices[0]
				text, finish, u = c.Text+c.Message.Content, *c.FinishReason, r.Usage
			}
			if text != tc.wantText || finish != tc.wantFinish {
				t.Errorf("text %q finish %q, want %q %q", text, finish, tc.wantText, tc.wantFinish)
			}
			if (u != nil) != tc.wantUsage {
				t.Fatalf("usage %+v, want present=%v", u, tc.wantUsage)
			}
			if u != nil && (u.Completion != strings.Count(tc.wantText, " ") || u.Total != u.Prompt+u.Completion || u.Prompt <= 0) {
				t.Errorf("usage %+v does not add up", *u)
			}
		})
	}
}

func TestRoutesAndErrors(t *testing.T) {
	s := newServer(withDefaults(Config{Models: []string{"a", "b"}}))
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"models", "GET", "/v1/models", "", 200},
		{"metrics", "GET", "/metrics", "", 200},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"c","messages":[{}]}`, 404},
		{"bad json", "POST", "/v1/chat/completions", `{"model":`, 400},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"a"}`, 400},
		{"no prompt", "POST", "/v1/completions", `{"model":"a"}`, 400},
		{"unknown route", "GET", "/v1/nope", "", 404},
		{"wrong method", "GET", "/v1/chat/completions", "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := serve(t, s, tc.method, tc.path, tc.body)
			if status != tc.want {
				t.Errorf("status %d, want %d: %s", status, tc.want, body)
			}
			if status != 200 && !json.Valid(body) {
				t.Errorf("error body is not JSON: %s", body)
			}
		})
	}
	_, _, body := serve(t, s, "GET", "/v1/models", "")
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{list.Data[0].ID, list.Data[1].ID}, []string{"a", "b"}); diff != "" {
		t.Errorf("models (-got +want):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"zero", Config{}, false},
		{"shaped", Config{Latency: time.Millisecond, Jitter: time.Millisecond, Tokens: 100, TokenBytes: 8}, false},
		{"negative latency", Config{Latency: -1}, true},
		{"negative jitter", Config{Jitter: -1}, true},
		{"too many tokens", Config{Tokens: 1 << 20}, true},
		{"huge token", Config{TokenBytes: 4096}, true},
		{"quote in model", Config{Models: []string{`a"b`}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestStartServesOverLoopback(t *testing.T) {
	s, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	status, body, err := fasthttp.Post(nil, s.URL+"/chat/completions", nil)
	if err != nil || status != 400 {
		t.Fatalf("POST without body: %d %s %v, want 400", status, body, err)
	}
	if s.Requests() != 1 {
		t.Errorf("Requests() = %d, want 1", s.Requests())
	}
}

func FuzzGenerate(f *testing.F) {
	for _, b := range []string{
		`{"model":"mock-llm","messages":[{}]}`,
		`{"model":"mock-llm","prompt":"x","stream":true,"stream_options":{"include_usage":true},"max_tokens":3}`,
		`{"model":"mock-llm","messages":[{}],"max_tokens":-1}`,
		`{}`, `[]`, `null`,
	} {
		f.Add(b)
	}
	s := newServer(withDefaults(Config{Tokens: 4}))
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
			status, ctype, out := serve(t, s, "POST", path, body)
			if status == 200 && ctype == "application/json" && !json.Valid(out) {
				t.Errorf("200 with invalid JSON: %s", out)
			}
			if status != 200 && !json.Valid(out) {
				t.Errorf("error %d with invalid JSON body: %s", status, out)
			}
		}
	})
}
