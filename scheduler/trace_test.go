package scheduler

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// notifyingExporter is the in-memory exporter that also reports each
// ended span's name, so a test waits for the spans that end on other
// goroutines (the worker's, the link's) without polling.
type notifyingExporter struct {
	*tracetest.InMemoryExporter
	ended chan string
}

func (e *notifyingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.InMemoryExporter.ExportSpans(ctx, spans)
	for _, s := range spans {
		e.ended <- s.Name() + "/" + s.SpanKind().String()
	}
	return err
}

// TestDispatchTraceOverRealTransport checks that one request is one
// connected trace through the real pieces: the scheduler's dispatch span,
// the batcher queue, the worker link's client span (workers.Client) and
// the worker's server span (workers.NewHandler), the agent's task span and
// the engine call (the simulator); and that the scheduler's metrics and
// gauges are exported.
func TestDispatchTraceOverRealTransport(t *testing.T) {
	exp := &notifyingExporter{tracetest.NewInMemoryExporter(), make(chan string, 64)}
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{ServiceName: "test", Prometheus: true}, obs.WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // in-memory exporters

	eng, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	model := eng.Models()[0]
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: "w1", Engine: eng, Obs: p})
	srv := httptest.NewServer(workers.NewHandler(agent, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	s, err := New(Config{}, Deps{
		Clock: clock.Real{},
		DialWorker: func(w *task.Registered) Conn {
			return workers.NewClient(w.URL, workers.ClientOptions{Token: w.SessionToken, Obs: p})
		},
		Obs: p,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Upsert(&task.Registered{WorkerID: "w1", URL: srv.URL, MaxConcurrency: 4, Models: []task.ModelVersion{model}})

	// The gateway's route span stands in as the request's root.
	ctx, root := p.Start(context.Background(), "POST /v1/chat/completions", obs.KindServer)
	tk := &task.Task{RequestID: "r1", Kind: task.KindChat, Model: model.Name, MaxTokens: 8,
		Messages: []task.Message{{Role: "user", Content: "tell me a story"}}}
	if err := s.Dispatch(ctx, tk, func(task.Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
	root.End()
	if tk.Traceparent == "" {
		t.Error("Dispatch left Task.Traceparent empty")
	}

	want := map[string]bool{
		"POST /v1/chat/completions/server": true, "scheduler.dispatch/internal": true, "batcher.queue/internal": true,
		"POST /v1/worker/batch/client": true, "POST /v1/worker/batch/server": true,
		"worker.task/internal": true, "engine.generate/internal": true,
	}
	guard := time.After(10 * time.Second) // a hang guard, never a timing assertion
	for seen := 0; seen < len(want); {
		select {
		case name := <-exp.ended:
			if want[name] {
				seen++
			}
		case <-guard:
			t.Fatalf("spans ended: %v; want all of %v", names(exp.GetSpans()), want)
		}
	}

	spans := exp.GetSpans()
	span := func(name string, kind trace.SpanKind) tracetest.SpanStub {
		t.Helper()
		for _, s := range spans {
			if s.Name == name && s.SpanKind == kind {
				return s
			}
		}
		t.Fatalf("no %v span %q in %v", kind, name, names(spans))
		return tracetest.SpanStub{}
	}
	rootSpan := span("POST /v1/chat/completions", trace.SpanKindServer)
	tests := []struct {
		name         string
		child        string
		childKind    trace.SpanKind
		parent       string
		parentKind   trace.SpanKind
		remoteParent bool
		// eitherParent: a one-task frame's link call runs on the dispatching
		// goroutine under its context (a local parent) or, batched, on its
		// own from the task's traceparent (a remote one).
		eitherParent bool
	}{
		{"dispatch under the route", "scheduler.dispatch", trace.SpanKindInternal, "POST /v1/chat/completions", trace.SpanKindServer, false, false},
		{"queue under dispatch", "batcher.queue", trace.SpanKindInternal, "scheduler.dispatch", trace.SpanKindInternal, true, false},
		{"link client under dispatch", "POST /v1/worker/batch", trace.SpanKindClient, "scheduler.dispatch", trace.SpanKindInternal, true, true},
		{"worker server under link client", "POST /v1/worker/batch", trace.SpanKindServer, "POST /v1/worker/batch", trace.SpanKindClient, true, false},
		{"task under dispatch, from Task.Traceparent", "worker.task", trace.SpanKindInternal, "scheduler.dispatch", trace.SpanKindInternal, true, false},
		{"engine under task", "engine.generate", trace.SpanKindInternal, "worker.task", trace.SpanKindInternal, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, p := span(tc.child, tc.childKind), span(tc.parent, tc.parentKind)
			if c.SpanContext.TraceID() != rootSpan.SpanContext.TraceID() {
				t.Errorf("trace %v, want the request's %v", c.SpanContext.TraceID(), rootSpan.SpanContext.TraceID())
			}
			if c.Parent.SpanID() != p.SpanContext.SpanID() {
				t.Errorf("parent %v, want %v", c.Parent.SpanID(), p.SpanContext.SpanID())
			}
			if c.Parent.IsRemote() != tc.remoteParent && !tc.eitherParent {
				t.Errorf("parent remote = %v, want %v", c.Parent.IsRemote(), tc.remoteParent)
			}
		})
	}

	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{
		"tollgate_scheduler_decision_duration_seconds_count 1",
		"tollgate_scheduler_candidates_count 1",
		"tollgate_batch_size_count 1",
		"tollgate_scheduler_queue_wait_seconds_count 1",
		"tollgate_scheduler_queue_length 0",
		`tollgate_workers{state="healthy"} 1`,
		`tollgate_workers{state="unhealthy"} 0`,
	} {
		if !strings.Contains(buf.String(), series+"\n") {
			t.Errorf("metrics lack %q:\n%s", series, buf.String())
		}
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name + "/" + s.SpanKind.String()
	}
	return out
}
