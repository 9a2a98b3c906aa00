package main

import (
	"encoding/hex"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

var responseBodies = []struct {
	name, body, text string
}{
	{"chat", `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}]}`, "Hi there"},
	{"completion", `{"object":"text_completion","choices":[{"text":"Once","index":0}]}`, "Once"},
	{"chat stream", "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n: keepalive\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n", "Hi there"},
	{"stream ended by an error", "data: {\"choices\":[{\"index\":0,\"text\":\"Hi\"}]}\r\n\r\ndata: {\"error\":{\"message\":\"x\"}}\r\n\r\n", "Hi"},
}

func TestResponseDigest(t *testing.T) {
	for _, tc := range responseBodies {
		t.Run(tc.name, func(t *testing.T) {
			got, err := responseDigest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if want := task.ResponseDigest(tc.text, nil); got != want {
				t.Errorf("digest %s, want that of %q", hex.EncodeToString(got[:]), tc.text)
			}
		})
	}
	emb := `{"object":"list","data":[{"object":"embedding","index":1,"embedding":"AACAPw=="},{"object":"embedding","index":0,"embedding":[0.5,-2]}]}`
	got, err := responseDigest([]byte(emb))
	if want := task.ResponseDigest("", [][]float32{{0.5, -2}, {1}}); err != nil || got != want {
		t.Errorf("embeddings: %v, digest %x", err, got)
	}
}

func FuzzResponseDigest(f *testing.F) {
	for _, tc := range responseBodies {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		responseDigest(body) // must not panic, whatever a client hands it
	})
}
