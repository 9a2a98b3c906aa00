package workers_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestTaskSpanParents checks where the agent's task span hangs: under the
// task's own Traceparent when it carries a valid one, else under the
// batch's span (a malformed one from outside is ignored, not an error);
// the engine call is always its child.
func TestTaskSpanParents(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{}, obs.WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // in-memory exporter
	a := workers.NewAgent(workers.AgentConfig{WorkerID: "0xabc", Engine: simEngine(t), Clock: clock.NewFake(t0), Obs: p})

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name        string
		traceparent string
		wantParent  string // "task": the traceparent's span; "batch": the batch span
	}{
		{"valid traceparent", tp, "task"},
		{"none", "", "batch"},
		{"malformed", "00-zz-garbage", "batch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp.Reset()
			ctx, batchSpan := p.Start(context.Background(), "POST /v1/worker/batch", obs.KindServer)
			tk := chatTask("r")
			tk.Traceparent = tc.traceparent
			var c collected
			if err := a.RunBatch(ctx, &task.Batch{ID: "b-" + tc.name, Tasks: []task.Task{tk}}, c.emit); err != nil {
				t.Fatal(err)
			}
			batchSpan.End()
			if ev := c.last(t, 0); ev.Type != task.EventDone {
				t.Fatalf("task ended %q", ev.Type)
			}
			var taskSpan, engineSpan tracetest.SpanStub
			for _, s := range exp.GetSpans() {
				switch s.Name {
				case "worker.task":
					taskSpan = s
				case "engine.generate":
					engineSpan = s
				}
			}
			want := trace.SpanContextFromContext(ctx).SpanID()
			if tc.wantParent == "task" {
				want = obs.ParseTraceparent(tp).SpanID()
			}
			if taskSpan.Parent.SpanID() != want {
				t.Errorf("task span parent %v, want %v", taskSpan.Parent.SpanID(), want)
			}
			if engineSpan.Parent.SpanID() != taskSpan.SpanContext.SpanID() {
				t.Errorf("engine span parent %v, want the task span %v", engineSpan.Parent.SpanID(), taskSpan.SpanContext.SpanID())
			}
		})
	}
}
