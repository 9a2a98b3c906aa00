package prover

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/workers"
)

// TestBatchTraceLinksRequests checks that the prover's batch is its own
// trace, linked to the traces of the requests whose receipts it proves
// (their traceparents stored beside the receipts by Ledger.Record), and
// that proving time and the receipts gauge are exported.
func TestBatchTraceLinksRequests(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p, shutdown, err := obs.Setup(context.Background(), obs.Config{ServiceName: "test", Prometheus: true}, obs.WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // in-memory exporters
	e := newEnv(t)
	p.Metrics().ObserveReceipts(func(ctx context.Context) (obs.ReceiptCounts, error) {
		c, err := e.ledger.Counts(ctx)
		return obs.ReceiptCounts(c), err
	})

	var requests []trace.SpanContext
	for i := range 2 {
		ctx, span := p.Start(context.Background(), "POST /v1/chat/completions", obs.KindServer)
		reqID := fmt.Sprintf("t-%d", i)
		c := &task.Completion{RequestID: reqID, WorkerID: e.wid, Model: model.Name, ModelDigest: model.Digest,
			RequestDigest: digest("rq" + reqID), ResponseDigest: digest("rs" + reqID), Subject: "key_1",
			PromptTokens: 7, CompletionTokens: 30, Time: e.clock.Now().UTC()}
		e.own[reqID] = c
		if err := e.ledger.Record(ctx, "rcpt_"+reqID, c); err != nil {
			t.Fatal(err)
		}
		span.End()
		requests = append(requests, trace.SpanContextFromContext(ctx))
	}
	if got, err := e.ledger.Counts(context.Background()); err != nil || got != (ledger.Counts{Pending: 2}) {
		t.Fatalf("counts before proving = %+v, %v; want 2 pending", got, err)
	}

	pl, err := New(e.ledger, Config{KeyDir: e.keys, MaxAge: time.Second, Clock: e.clock, Obs: p,
		Countersign: func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return e.signer.Countersign(ctx, req)
		}})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	if n, err := pl.Step(context.Background()); err != nil || n != 2 {
		t.Fatalf("proved %d, err %v; want 2", n, err)
	}

	var batch, prove *tracetest.SpanStub
	spans := exp.GetSpans()
	for i := range spans {
		switch spans[i].Name {
		case "prover.batch":
			batch = &spans[i]
		case "zk.prove":
			prove = &spans[i]
		}
	}
	if batch == nil || prove == nil {
		t.Fatalf("spans %v lack prover.batch or zk.prove", spans)
	}
	if batch.Parent.IsValid() {
		t.Errorf("batch span has parent %v, want a new root", batch.Parent.SpanID())
	}
	var linked []trace.SpanContext
	for _, l := range batch.Links {
		linked = append(linked, l.SpanContext.WithRemote(false))
		if l.SpanContext.TraceID() == batch.SpanContext.TraceID() {
			t.Errorf("link %v is in the batch's own trace", l.SpanContext.TraceID())
		}
	}
	if diff := cmp.Diff(linked, requests, cmp.Comparer(func(a, b trace.SpanContext) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("batch links (-got +want):\n%s", diff)
	}
	if prove.Parent.SpanID() != batch.SpanContext.SpanID() {
		t.Errorf("zk.prove parent %v, want the batch span %v", prove.Parent.SpanID(), batch.SpanContext.SpanID())
	}

	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{
		`tollgate_receipts_proving_duration_seconds_count{outcome="ok"} 1`,
		`tollgate_receipts{status="pending"} 0`,
		`tollgate_receipts{status="proven"} 2`,
		`tollgate_receipts{status="failed"} 0`,
	} {
		if !strings.Contains(buf.String(), series+"\n") {
			t.Errorf("metrics lack %q:\n%s", series, buf.String())
		}
	}
}
