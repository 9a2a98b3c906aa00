package openai

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/jsonx"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// NewErrorBody is the OpenAI error envelope for e.
func NewErrorBody(e *apierr.Error) ErrorBody {
	d := ErrorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		d.Param = &e.Param
	}
	if e.Code != "" {
		d.Code = &e.Code
	}
	return ErrorBody{Error: d}
}

// MarshalError renders e as OpenAI's error JSON.
func MarshalError(e *apierr.Error) []byte {
	b, _ := json.Marshal(NewErrorBody(e)) // plain strings: cannot fail
	return b
}

// NewUsage converts the worker's usage.
func NewUsage(u *task.Usage) Usage {
	if u == nil {
		return Usage{}
	}
	return Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.PromptTokens + u.CompletionTokens}
}

// NewEmbeddingList builds an embeddings response; format "base64" encodes
// each vector as base64 of little-endian float32s, like OpenAI.
func NewEmbeddingList(model, format string, vectors [][]float32, promptTokens int) *EmbeddingList {
	out := &EmbeddingList{Object: "list", Model: model, Data: make([]Embedding, len(vectors))}
	for i, v := range vectors {
		var e any = v
		if format == "base64" {
			e = base64.StdEncoding.EncodeToString(task.EmbeddingBytes([][]float32{v}))
		}
		out.Data[i] = Embedding{Object: "embedding", Index: i, Embedding: e}
	}
	out.Usage.PromptTokens = promptTokens
	out.Usage.TotalTokens = promptTokens
	return out
}

// NewModelList lists model versions as OpenAI models, one entry per name.
func NewModelList(models []task.ModelVersion, created int64) *ModelList {
	out := &ModelList{Object: "list", Data: []Model{}}
	seen := map[string]bool{}
	for _, m := range models {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		out.Data = append(out.Data, NewModel(m, created))
	}
	return out
}

// NewModel is one model entry.
func NewModel(m task.ModelVersion, created int64) Model {
	owner := m.OwnedBy
	if owner == "" {
		owner = "tollgate"
	}
	return Model{ID: m.Name, Object: "model", Created: created, OwnedBy: owner}
}

// Ptr returns a pointer to v (for the nullable fields of chunks).
func Ptr[T any](v T) *T { return &v }

// AppendChatContentChunk appends the JSON of the stream chunk that carries
// one piece of a chat answer's text: the same object as ChatChunk with one
// choice whose delta has only content, without reflection (one is written
// per token).
func AppendChatContentChunk(b []byte, id string, created int64, model, text string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"choices":[{"index":0,"delta":{"content":`...)
	b = jsonx.AppendString(b, text)
	return append(b, `},"logprobs":null,"finish_reason":null}],"system_fingerprint":null}`...)
}

// AppendTextChunk appends the JSON of the stream chunk that carries one
// piece of a completion's text: TextCompletion with one choice and no
// finish reason, without reflection.
func AppendTextChunk(b []byte, id string, created int64, model, text string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"object":"text_completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"choices":[{"text":`...)
	b = jsonx.AppendString(b, text)
	return append(b, `,"index":0,"logprobs":null,"finish_reason":null}],"system_fingerprint":null}`...)
}

// AppendChatCompletion appends the JSON of a non-streamed chat answer with
// one choice (the ChatCompletion the gateway sends), without reflection.
func AppendChatCompletion(b []byte, id string, created int64, model, text, finishReason string, u Usage) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, model)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = jsonx.AppendString(b, text)
	b = append(b, `,"refusal":null},"logprobs":null,"finish_reason":`...)
	b = jsonx.AppendString(b, finishReason)
	b = append(b, `}],"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.TotalTokens), 10)
	return append(b, `},"system_fingerprint":null}`...)
}
