package openai

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
)

// BenchmarkSSEReader parses a 200-chunk chat stream.
func BenchmarkSSEReader(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 200; i++ {
		sb.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}` + "\n\n")
	}
	stream := sb.String()
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r := newSSEReader(strings.NewReader(stream), DefaultMaxEventBytes, nil)
		for {
			if _, err := r.next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkGenerateStream is one streamed chat request end to end against
// the in-process mock upstream over loopback (pooled connection).
func BenchmarkGenerateStream(b *testing.B) {
	up := upstreamtest.Start(upstreamtest.Config{})
	defer up.Close()
	e, err := New(Config{BaseURL: up.URL, Models: []task.ModelVersion{{Name: "mock-llm", Digest: digest}}, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	tk := task.Task{Kind: task.KindChat, Model: "mock-llm", Messages: []task.Message{{Role: "user", Content: "hello"}}}
	emit := func(task.Delta) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Generate(context.Background(), &tk, emit); err != nil {
			b.Fatal(err)
		}
	}
}
