package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const sdkKey = "sk-sdk-test-key"

// startTestDev runs `tollgate dev` in-process on a free port with the
// sim-tiny simulator: the same gateway, worker and registration path as the
// binary.
func startTestDev(t *testing.T) *devStack {
	t.Helper()
	// The stack's log is kept and shown only if the test fails.
	var buf lockedBuffer
	d, err := startDevLogged(t.TempDir(), true, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			t.Logf("tollgate dev log:\n%s", buf.String())
		}
	})
	return d
}

// lockedBuffer is a bytes.Buffer safe for the stack's concurrent logging.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDevForBench starts a dev stack with the sim-tiny simulator on a free
// loopback port, logging discarded.
func startDevForBench(dataDir string, receipts bool) (*devStack, error) {
	return startDevLogged(dataDir, receipts, slog.New(slog.DiscardHandler))
}

func startDevLogged(dataDir string, receipts bool, logger *slog.Logger) (*devStack, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := devOptions{ln: ln, logger: logger}
	o.gateway = gatewayFlags{data: dataDir, apiKey: sdkKey, adminKey: "sk-admin-test", noReceipts: !receipts, noProver: true}
	o.engine = engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}
	return startDev(context.Background(), o)
}

func sdkClient(d *devStack, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(d.URL()+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// TestOpenAIGoSDK drives the official Go SDK against a real gateway and
// worker: chat, streaming chat with usage, completions, embeddings, models.
func TestOpenAIGoSDK(t *testing.T) {
	d := startTestDev(t)
	c := sdkClient(d, sdkKey)
	ctx := context.Background()

	t.Run("chat", func(t *testing.T) {
		resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     "sim-tiny",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("Say hello")},
			MaxTokens: openai.Int(8),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content == "" || resp.Object != "chat.completion" {
			t.Fatalf("response %+v", resp)
		}
		u := resp.Usage
		if u.CompletionTokens < 1 || u.CompletionTokens > 8 || u.PromptTokens < 1 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage %+v", u)
		}
		if fr := resp.Choices[0].FinishReason; fr != "stop" && fr != "length" {
			t.Errorf("finish_reason %q", fr)
		}
	})

	t.Run("streaming chat with usage", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "sim-tiny",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story")},
			MaxTokens:     openai.Int(12),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		var text strings.Builder
		chunks := 0
		for stream.Next() {
			ch := stream.Current()
			acc.AddChunk(ch)
			chunks++
			if len(ch.Choices) > 0 {
				text.WriteString(ch.Choices[0].Delta.Content)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 3 || text.Len() == 0 {
			t.Fatalf("%d chunks, text %q", chunks, text.String())
		}
		if acc.Usage.CompletionTokens < 1 || acc.Usage.TotalTokens != acc.Usage.PromptTokens+acc.Usage.CompletionTokens {
			t.Errorf("streamed usage %+v", acc.Usage)
		}
		if got := acc.Choices[0].Message.Content; got != text.String() {
			t.Errorf("accumulated %q, streamed %q", got, text.String())
		}
	})

	t.Run("completions", func(t *testing.T) {
		resp, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:     "sim-tiny",
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			MaxTokens: openai.Int(5),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Usage.CompletionTokens < 1 || resp.Usage.CompletionTokens > 5 {
			t.Fatalf("response %+v", resp)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
			resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
				Model:          "sim-tiny",
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first", "second text"}},
				EncodingFormat: format,
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Data) != 2 || resp.Usage.PromptTokens < 1 {
				t.Fatalf("%s: response %+v", format, resp)
			}
			if format == openai.EmbeddingNewParamsEncodingFormatFloat {
				var norm float64
				for _, v := range resp.Data[0].Embedding {
					norm += v * v
				}
				if math.Abs(norm-1) > 1e-3 {
					t.Errorf("embedding norm² %v, want 1", norm)
				}
			}
		}
		one, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "sim-tiny", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("single")}})
		if err != nil || len(one.Data) != 1 {
			t.Fatalf("single input: %v %+v", err, one)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 1 || page.Data[0].ID != "sim-tiny" {
			t.Fatalf("models %+v", page.Data)
		}
		m, err := c.Models.Get(ctx, "sim-tiny")
		if err != nil || m.ID != "sim-tiny" {
			t.Fatalf("get: %v %+v", err, m)
		}
	})
}

// TestOpenAIGoSDKErrors checks that the SDK sees typed errors with the
// status, code and param a client would branch on.
func TestOpenAIGoSDKErrors(t *testing.T) {
	d := startTestDev(t)
	ctx := context.Background()
	chat := func(key string, p openai.ChatCompletionNewParams) error {
		c := sdkClient(d, key)
		_, err := c.Chat.Completions.New(ctx, p)
		return err
	}
	user := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}
	tests := []struct {
		name   string
		call   func() error
		status int
		code   string
		param  string
	}{
		{"wrong key", func() error {
			return chat("sk-wrong", openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: user})
		}, 401, "invalid_api_key", ""},
		{"unknown model", func() error { return chat(sdkKey, openai.ChatCompletionNewParams{Model: "gpt-nope", Messages: user}) }, 404, "model_not_found", "model"},
		{"empty messages", func() error {
			return chat(sdkKey, openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: []openai.ChatCompletionMessageParamUnion{}})
		}, 400, "invalid_value", "messages"},
		{"n above 1", func() error {
			return chat(sdkKey, openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: user, N: openai.Int(2)})
		}, 400, "unsupported_parameter", "n"},
		{"temperature out of range", func() error {
			return chat(sdkKey, openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: user, Temperature: openai.Float(2.5)})
		}, 400, "invalid_value", "temperature"},
		{"negative max_tokens", func() error {
			return chat(sdkKey, openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: user, MaxTokens: openai.Int(-1)})
		}, 400, "invalid_value", "max_tokens"},
		{"tools unsupported", func() error {
			return chat(sdkKey, openai.ChatCompletionNewParams{Model: "sim-tiny", Messages: user, Tools: []openai.ChatCompletionToolUnionParam{
				openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "f"}),
			}})
		}, 400, "unsupported_parameter", "tools"},
		{"unknown model streaming", func() error {
			c := sdkClient(d, sdkKey)
			s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "gpt-nope", Messages: user})
			for s.Next() {
			}
			return s.Err()
		}, 404, "model_not_found", "model"},
		{"token-array embeddings", func() error {
			c := sdkClient(d, sdkKey)
			_, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "sim-tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfTokens: []int64{1, 2}}})
			return err
		}, 400, "unsupported_parameter", "input"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want *openai.Error", err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Code != tc.code || apiErr.Param != tc.param || apiErr.Message == "" {
				t.Errorf("got status=%d code=%q param=%q msg=%q, want %d %q %q", apiErr.StatusCode, apiErr.Code, apiErr.Param, apiErr.Message, tc.status, tc.code, tc.param)
			}
		})
	}
}
