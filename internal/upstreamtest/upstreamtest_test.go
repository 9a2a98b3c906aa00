package upstreamtest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The mock must look like a real OpenAI-compatible server to the official SDK.
func TestOpenAISDK(t *testing.T) {
	s := Start(Config{APIKey: "sk-test"})
	defer s.Close()
	client := openai.NewClient(option.WithBaseURL(s.URL+"/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("hello there")}
	mockMsgs := []Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello there"}}
	tokens, finish := Generate(ChatPrompt(mockMsgs), 0, nil)
	wantText := strings.Join(tokens, "")

	t.Run("chat", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "mock-llm", Messages: msgs})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Choices[0].Message.Content; got != wantText || resp.Choices[0].FinishReason != finish {
			t.Errorf("got %q/%s, want %q/%s", got, resp.Choices[0].FinishReason, wantText, finish)
		}
		if resp.Usage.PromptTokens != int64(ChatPromptTokens(mockMsgs)) || resp.Usage.CompletionTokens != int64(len(tokens)) {
			t.Errorf("usage %+v", resp.Usage)
		}
	})
	t.Run("chat stream with usage", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "mock-llm", Messages: msgs,
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var text strings.Builder
		var completion int64
		for stream.Next() {
			c := stream.Current()
			if len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
			if c.Usage.CompletionTokens > 0 {
				completion = c.Usage.CompletionTokens
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != wantText || completion != int64(len(tokens)) {
			t.Errorf("got %q with %d tokens, want %q with %d", text.String(), completion, wantText, len(tokens))
		}
	})
	t.Run("embeddings", func(t *testing.T) {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "mock-embed", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b", "c"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Data) != 2 || resp.Usage.PromptTokens != 3 {
			t.Fatalf("got %d vectors, usage %+v", len(resp.Data), resp.Usage)
		}
		for _, d := range resp.Data {
			in := []string{"a b", "c"}[d.Index]
			if want := Embedding(in, 8); float32(d.Embedding[0]) != want[0] {
				t.Errorf("vector %d differs", d.Index)
			}
		}
	})
	t.Run("injected error", func(t *testing.T) {
		s.FailNext(1, Failure{Status: 400, Type: "invalid_request_error", Code: "bad_thing", Message: "nope"})
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "mock-llm", Messages: msgs})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Code != "bad_thing" || apiErr.Message != "nope" {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		bad := openai.NewClient(option.WithBaseURL(s.URL+"/"), option.WithAPIKey("sk-wrong"), option.WithMaxRetries(0))
		_, err := bad.Models.List(ctx)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
			t.Fatalf("err %v", err)
		}
	})
}

func TestMetrics(t *testing.T) {
	for _, flavor := range []string{"vllm", "sglang"} {
		t.Run(flavor, func(t *testing.T) {
			s := Start(Config{Flavor: flavor})
			defer s.Close()
			s.SetLoad(4, 2, 0.5)
			resp, err := http.Get(s.MetricsURL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			want := map[string]string{
				"vllm":   `vllm:num_requests_waiting{engine="0",model_name="mock-llm"} 4.0`,
				"sglang": `sglang:num_queue_reqs{model_name="mock-llm",tp_rank="0"} 4`,
			}[flavor]
			if !strings.Contains(string(b), want) {
				t.Errorf("metrics lack %q:\n%s", want, b)
			}
		})
	}
}

func TestGenerateDeterministic(t *testing.T) {
	a, fa := Generate("same prompt", 0, nil)
	b, fb := Generate("same prompt", 0, nil)
	if strings.Join(a, "") != strings.Join(b, "") || fa != fb || len(a) < 6 {
		t.Fatalf("not deterministic: %q vs %q", a, b)
	}
	short, f := Generate("same prompt", 2, nil)
	if len(short) != 2 || f != "length" {
		t.Fatalf("max_tokens 2: %q %s", short, f)
	}
	stopped, f := Generate("same prompt", 0, []string{strings.TrimSpace(a[2])})
	if len(stopped) > 2 || f != "stop" {
		t.Fatalf("stop at %q: %q %s", a[2], stopped, f)
	}
}
