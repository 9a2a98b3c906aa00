package workers_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// dimsEngine declares embeddings dimensions and answers with vectors of
// the length it chooses: honest (the length asked) or not.
type dimsEngine struct {
	*sim.Engine
	lie bool
}

func (e dimsEngine) Models() []task.ModelVersion {
	ms := e.Engine.Models()
	for i := range ms {
		ms[i].Capabilities = append(ms[i].Capabilities, task.CapDimensions)
	}
	return ms
}

func (e dimsEngine) EmbedDimensions(ctx context.Context, model string, inputs []string, dims int) (task.EmbedResult, error) {
	n := dims
	if e.lie {
		n = dims * 2 // the client pays for, and gets, vectors of a length it did not ask
	}
	vs := make([][]float32, len(inputs))
	for i := range vs {
		vs[i] = make([]float32, n)
		vs[i][0] = 1
	}
	return task.EmbedResult{Vectors: vs, PromptTokens: len(inputs)}, nil
}

// The gateway holds a worker's embeddings to the dimensions the request
// asked: a worker whose vectors have another length is refused at the
// link, whatever its engine claims.
func TestEmbeddingDimensionsHeldAtTheLink(t *testing.T) {
	for _, lie := range []bool{false, true} {
		c := serveAgent(t, newAgent(t, dimsEngine{Engine: simEngine(t), lie: lie}))
		tk := task.Task{RequestID: "e1", Kind: task.KindEmbedding, Model: "sim-tiny", Subject: "key_1", Inputs: []string{"a", "b"}, Dimensions: 4}
		var got collected
		err := c.Run(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{tk}}, func(ev task.Event) { got.emit(ev) })
		switch {
		case !lie && err != nil:
			t.Fatalf("honest worker refused: %v", err)
		case !lie && len(got.last(t, 0).Embeddings[0]) != 4:
			t.Fatalf("honest vectors of %d dimensions", len(got.last(t, 0).Embeddings[0]))
		case lie && (err == nil || !strings.Contains(err.Error(), "dimensions")):
			t.Fatalf("vectors of another length than asked accepted: %v", err)
		}
	}
}

var _ workers.DimensionsEmbedder = dimsEngine{}
