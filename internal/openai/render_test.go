package openai

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAppendChunks: the hand-written stream chunks decode to the same
// value as encoding/json's rendering of the structs they stand for.
func TestAppendChunks(t *testing.T) {
	for _, text := range []string{"hello", "", "a \"quoted\"\nline <b>&amp;</b>", "世界 🙂", "bad\xffutf8"} {
		t.Run(text, func(t *testing.T) {
			chat := &ChatChunk{ID: "chatcmpl-1\"x", Object: "chat.completion.chunk", Created: 1764000000, Model: "m<1>",
				Choices: []ChatChunkChoice{{Delta: ChatDelta{Content: Ptr(text)}}}}
			compareJSON(t, AppendChatContentChunk(nil, chat.ID, chat.Created, chat.Model, text), chat)
			comp := &TextCompletion{ID: "cmpl-1", Object: "text_completion", Created: 5, Model: "m",
				Choices: []CompletionChoice{{Text: text}}}
			compareJSON(t, AppendTextChunk(nil, comp.ID, comp.Created, comp.Model, text), comp)
			u := Usage{PromptTokens: 12, CompletionTokens: 16, TotalTokens: 28}
			whole := &ChatCompletion{ID: "chatcmpl-2", Object: "chat.completion", Created: 7, Model: "m\n",
				Choices: []ChatChoice{{Message: ResponseMessage{Role: "assistant", Content: &text}, FinishReason: "length"}}, Usage: u}
			compareJSON(t, AppendChatCompletion(nil, whole.ID, whole.Created, whole.Model, text, "length", u), whole)
		})
	}
}

func compareJSON(t *testing.T, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(g, w); diff != "" {
		t.Errorf("(-appended +encoding/json):\n%s", diff)
	}
}
