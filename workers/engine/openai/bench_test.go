package openai

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/upstreamtest"
	"github.com/tollgate-ai/tollgate/workers"
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
	e, err := New(Config{BaseURL: up.URL, Models: []workers.ModelVersion{{Name: "mock-llm", Digest: digest}}, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	task := workers.Task{Kind: workers.KindChat, Model: "mock-llm", Messages: []workers.Message{{Role: "user", Content: "hello"}}}
	emit := func(workers.Delta) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Generate(context.Background(), &task, emit); err != nil {
			b.Fatal(err)
		}
	}
}
