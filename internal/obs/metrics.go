package obs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// GenAI operation names (gen_ai.operation.name) for the gateway's routes.
const (
	OpChat           = "chat"
	OpTextCompletion = "text_completion"
	OpEmbeddings     = "embeddings"
)

// Metric names as registered with OpenTelemetry. The Prometheus exporter
// turns dots into underscores and appends the unit and _total suffixes; the
// exposed names are listed in deploy/grafana-tollgate.json and checked by
// TestPrometheusScrape.
const (
	MetricHTTPDuration    = "http.server.request.duration"
	MetricHTTPRequests    = "tollgate.http.server.requests"
	MetricGenAIDuration   = "gen_ai.server.request.duration"
	MetricTTFT            = "gen_ai.server.time_to_first_token"
	MetricTPOT            = "gen_ai.server.time_per_output_token"
	MetricTokenUsage      = "gen_ai.client.token.usage"
	MetricQueueLength     = "tollgate.scheduler.queue.length"
	MetricInFlight        = "tollgate.scheduler.in_flight"
	MetricQueueWait       = "tollgate.scheduler.queue.wait"
	MetricDecision        = "tollgate.scheduler.decision.duration"
	MetricCandidates      = "tollgate.scheduler.candidates"
	MetricBatchSize       = "tollgate.batch.size"
	MetricWorkers         = "tollgate.workers"
	MetricReceipts        = "tollgate.receipts"
	MetricBacklogAge      = "tollgate.receipts.oldest_pending.age"
	MetricProvingDuration = "tollgate.receipts.proving.duration"
	MetricLedgerWrite     = "tollgate.ledger.write.duration"
	MetricRecordsRefused  = "tollgate.worker.records.refused"
	// MetricCountersign counts the prover's countersign attempts by outcome
	// (Countersign* below); MetricWorkerRecords counts what happens to a
	// worker's completion records (Records* below).
	MetricCountersign   = "tollgate.receipts.countersign"
	MetricWorkerRecords = "tollgate.worker.records"
)

// Outcomes of a countersign attempt (MetricCountersign's "outcome").
const (
	CountersignSigned       = "signed"
	CountersignUnreachable  = "unreachable"
	CountersignTimeout      = "timeout"
	CountersignServerError  = "server_error"
	CountersignUnauthorized = "unauthorized"
	CountersignRejected     = "rejected" // another 4xx: the batch waits, it is not failed
	CountersignRefused      = "refused"  // the worker refused records: only those fail
	CountersignRecut        = "recut"    // the batch was given up and re-cut
	CountersignRevived      = "revived"  // a re-cut batch the worker had signed was reopened
)

// Events of a worker's completion records (MetricWorkerRecords's "event");
// a refused countersign counts "refused_" + its code per record.
const (
	RecordsAgedOutSigned   = "aged_out_countersigned"
	RecordsAgedOutUnsigned = "aged_out_unsigned"
)

// Bucket boundaries. The GenAI ones are the semantic conventions'
// recommended boundaries; HTTP's are the HTTP conventions' extended with a
// tail for long streams.
var (
	bucketsGenAIDuration = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	bucketsTTFT          = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}
	bucketsTPOT          = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5}
	bucketsTokens        = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
	bucketsHTTP          = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120, 300}
	bucketsQueueWait     = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	bucketsDecision      = []float64{0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01}
	bucketsBatchSize     = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	bucketsCandidates    = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	bucketsProving       = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320}
	bucketsLedgerWrite   = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
)

// maxSeries bounds each attribute cache, well under the SDK's own limit of
// 2000 series per instrument: past it the model label becomes "_other", so a
// client naming random models cannot blow up cardinality.
const maxSeries = 512

// QueueCounts is the scheduler's queue state at collection time.
type QueueCounts struct {
	Queued   int // tasks waiting in batchers
	InFlight int // tasks placed and not ended (queued included)
}

// WorkerCounts is the registry's state at collection time.
type WorkerCounts struct {
	Healthy, Unhealthy int
}

// ReceiptCounts is the ledger's backlog at collection time (Void: receipt
// IDs that name nothing billable).
type ReceiptCounts struct {
	Pending, Proven, Failed, Void int64
}

// Generation is one finished (or failed) inference request, as the gateway
// records it once at its end.
type Generation struct {
	Operation string // OpChat, OpTextCompletion, OpEmbeddings
	Model     string // as requested; only models the gateway knows
	// ErrorType is empty on success, else the error code or HTTP status
	// class ("timeout", "429", "model_not_found", …).
	ErrorType string
	// Duration is request start to last byte.
	Duration time.Duration
	// TimeToFirstToken is request start to the first generated text; zero
	// for embeddings or when no token came.
	TimeToFirstToken time.Duration
	InputTokens      int
	OutputTokens     int
}

// Metrics holds every Tollgate instrument. Record methods take plain values,
// never allocate once a label combination has been seen, and return at once
// when metrics are off. The Observe* methods install the callbacks that
// feed the gauges at scrape time.
type Metrics struct {
	on bool

	httpDuration metric.Float64Histogram
	httpRequests metric.Int64Counter
	genDuration  metric.Float64Histogram
	ttft         metric.Float64Histogram
	tpot         metric.Float64Histogram
	tokens       metric.Int64Histogram
	queueWait    metric.Float64Histogram
	decision     metric.Float64Histogram
	candidates   metric.Int64Histogram
	batchSize    metric.Int64Histogram
	proving      metric.Float64Histogram
	ledgerWrite  metric.Float64Histogram
	refused      metric.Int64Counter
	countersign  metric.Int64Counter
	records      metric.Int64Counter

	queueFn    atomic.Pointer[func() QueueCounts]
	workersFn  atomic.Pointer[func() WorkerCounts]
	receiptsFn atomic.Pointer[func(context.Context) (ReceiptCounts, error)]
	backlogFn  atomic.Pointer[func(context.Context) (time.Duration, error)]
	audit      auditInstruments

	httpAttrs    attrCache[httpKey]
	genAttrs     attrCache[genKey]
	outcomeAttrs [2]measure // [0] ok, [1] error
}

var offMetrics = func() *Metrics {
	m, err := newMetrics(metricnoop.NewMeterProvider().Meter(ScopeName), false)
	if err != nil {
		panic(err) // the no-op meter cannot fail
	}
	return m
}()

func newMetrics(meter metric.Meter, on bool) (*Metrics, error) {
	m := &Metrics{on: on}
	var errs []error
	f64 := func(name, unit, desc string, buckets []float64) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	i64 := func(name, unit, desc string, buckets []float64) metric.Int64Histogram {
		h, err := meter.Int64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	m.httpDuration = f64(MetricHTTPDuration, "s", "Duration of HTTP server requests.", bucketsHTTP)
	var err error
	m.httpRequests, err = meter.Int64Counter(MetricHTTPRequests, metric.WithUnit("{request}"), metric.WithDescription("HTTP server requests by route, model and status."))
	errs = append(errs, err)
	m.genDuration = f64(MetricGenAIDuration, "s", "Generative AI server request duration such as time-to-last byte or last output token.", bucketsGenAIDuration)
	m.ttft = f64(MetricTTFT, "s", "Time to generate first token for successful responses.", bucketsTTFT)
	m.tpot = f64(MetricTPOT, "s", "Time per output token generated after the first token for successful responses.", bucketsTPOT)
	m.tokens = i64(MetricTokenUsage, "{token}", "Number of input and output tokens used.", bucketsTokens)
	m.queueWait = f64(MetricQueueWait, "s", "Time a task waited in a batcher queue before its batch was sent.", bucketsQueueWait)
	m.decision = f64(MetricDecision, "s", "Duration of one scheduling cycle (filter, score, pick).", bucketsDecision)
	m.candidates = i64(MetricCandidates, "{worker}", "Workers left after the scheduling filters, per placed cycle.", bucketsCandidates)
	m.batchSize = i64(MetricBatchSize, "{task}", "Tasks per batch frame sent to a worker.", bucketsBatchSize)
	m.proving = f64(MetricProvingDuration, "s", "Duration of proving one receipt batch.", bucketsProving)
	m.ledgerWrite = f64(MetricLedgerWrite, "s", "Duration of one durable ledger write (fsync included).", bucketsLedgerWrite)
	m.countersign, err = meter.Int64Counter(MetricCountersign, metric.WithUnit("{attempt}"), metric.WithDescription("Countersign attempts of the receipt prover by outcome."))
	errs = append(errs, err)
	m.records, err = meter.Int64Counter(MetricWorkerRecords, metric.WithUnit("{record}"), metric.WithDescription("A worker's completion records aged out or refused countersigning, by event."))
	errs = append(errs, err)

	m.refused, err = meter.Int64Counter(MetricRecordsRefused, metric.WithUnit("{record}"),
		metric.WithDescription("Worker completion records the gateway refused, by the check that failed (each ejected its worker)."))
	errs = append(errs, err)

	queue, err := meter.Int64ObservableGauge(MetricQueueLength, metric.WithUnit("{task}"), metric.WithDescription("Tasks waiting in all batcher queues."))
	errs = append(errs, err)
	inflight, err := meter.Int64ObservableGauge(MetricInFlight, metric.WithUnit("{task}"), metric.WithDescription("Tasks placed on workers and not yet ended."))
	errs = append(errs, err)
	workers, err := meter.Int64ObservableGauge(MetricWorkers, metric.WithUnit("{worker}"), metric.WithDescription("Registered workers by health."))
	errs = append(errs, err)
	rcpts, err := meter.Int64ObservableGauge(MetricReceipts, metric.WithUnit("{receipt}"), metric.WithDescription("Receipts in the ledger by status."))
	errs = append(errs, err)
	backlog, err := meter.Float64ObservableGauge(MetricBacklogAge, metric.WithUnit("s"), metric.WithDescription("Age of the oldest receipt neither proven nor failed (0: none); grows without bound when proving falls behind."))
	errs = append(errs, err)
	errs = append(errs, m.auditMetrics(meter))
	if err := joinErrs(errs); err != nil {
		return nil, fmt.Errorf("obs: instruments: %w", err)
	}

	healthy := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "healthy")))
	unhealthy := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "unhealthy")))
	pending := metric.WithAttributeSet(attribute.NewSet(attribute.String("status", "pending")))
	proven := metric.WithAttributeSet(attribute.NewSet(attribute.String("status", "proven")))
	failed := metric.WithAttributeSet(attribute.NewSet(attribute.String("status", "failed")))
	void := metric.WithAttributeSet(attribute.NewSet(attribute.String("status", "void")))
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		if f := m.queueFn.Load(); f != nil {
			q := (*f)()
			o.ObserveInt64(queue, int64(q.Queued))
			o.ObserveInt64(inflight, int64(q.InFlight))
		}
		if f := m.workersFn.Load(); f != nil {
			w := (*f)()
			o.ObserveInt64(workers, int64(w.Healthy), healthy)
			o.ObserveInt64(workers, int64(w.Unhealthy), unhealthy)
		}
		if f := m.receiptsFn.Load(); f != nil {
			r, err := (*f)(ctx)
			if err != nil {
				return fmt.Errorf("obs: receipts gauge: %w", err)
			}
			o.ObserveInt64(rcpts, r.Pending, pending)
			o.ObserveInt64(rcpts, r.Proven, proven)
			o.ObserveInt64(rcpts, r.Failed, failed)
			o.ObserveInt64(rcpts, r.Void, void)
		}
		if f := m.backlogFn.Load(); f != nil {
			age, err := (*f)(ctx)
			if err != nil {
				return fmt.Errorf("obs: backlog gauge: %w", err)
			}
			o.ObserveFloat64(backlog, age.Seconds())
		}
		return nil
	}, queue, inflight, workers, rcpts, backlog)
	if err != nil {
		return nil, fmt.Errorf("obs: register callback: %w", err)
	}

	m.httpAttrs.build = httpKey.attrs
	m.genAttrs.build = genKey.attrs
	m.outcomeAttrs[0] = newMeasure(attribute.NewSet(attribute.String("outcome", "ok")))
	m.outcomeAttrs[1] = newMeasure(attribute.NewSet(attribute.String("outcome", "error")))
	return m, nil
}

func joinErrs(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Enabled reports whether measurements are kept. A nil *Metrics is valid
// and off, so packages can take one as an optional dependency.
func (m *Metrics) Enabled() bool { return m != nil && m.on }

// ObserveQueue installs the scheduler's queue callback (read at scrape
// time; it must be fast and must not block), e.g.
// func() obs.QueueCounts { s := sched.Stats(); return obs.QueueCounts{s.QueueLength, s.InFlight} }.
func (m *Metrics) ObserveQueue(f func() QueueCounts) {
	if m != nil {
		m.queueFn.Store(&f)
	}
}

// ObserveWorkers installs the registry's worker-health callback.
func (m *Metrics) ObserveWorkers(f func() WorkerCounts) {
	if m != nil {
		m.workersFn.Store(&f)
	}
}

// ObserveReceipts installs the ledger's backlog callback; ctx ends with the
// scrape.
// ObserveBacklog installs the callback behind the oldest-pending-receipt
// age gauge (0 when nothing waits).
func (m *Metrics) ObserveBacklog(f func(context.Context) (time.Duration, error)) {
	if m != nil {
		m.backlogFn.Store(&f)
	}
}

func (m *Metrics) ObserveReceipts(f func(context.Context) (ReceiptCounts, error)) {
	if m != nil {
		m.receiptsFn.Store(&f)
	}
}

// RecordRequest records one HTTP request at the gateway: method, route
// template (a fixed string such as "/v1/chat/completions", never the raw
// path), model ("" when none) and status.
func (m *Metrics) RecordRequest(ctx context.Context, method, route, model string, status int, d time.Duration) {
	if !m.Enabled() {
		return
	}
	a := m.httpAttrs.get(httpKey{method: normalMethod(method), route: route, model: model, status: status})
	m.httpDuration.Record(ctx, d.Seconds(), a.rec...)
	m.httpRequests.Add(ctx, 1, a.add...)
}

// RecordGeneration records one inference request's GenAI metrics: the
// request duration always; on success, TTFT, time per output token (over
// the tokens after the first) and the input/output token usage.
func (m *Metrics) RecordGeneration(ctx context.Context, g Generation) {
	if !m.Enabled() {
		return
	}
	a := m.genAttrs.get(genKey{op: g.Operation, model: g.Model, errType: g.ErrorType})
	m.genDuration.Record(ctx, g.Duration.Seconds(), a.rec...)
	if g.ErrorType != "" {
		return
	}
	if g.TimeToFirstToken > 0 {
		m.ttft.Record(ctx, g.TimeToFirstToken.Seconds(), a.rec...)
		if g.OutputTokens > 1 && g.Duration > g.TimeToFirstToken {
			m.tpot.Record(ctx, (g.Duration-g.TimeToFirstToken).Seconds()/float64(g.OutputTokens-1), a.rec...)
		}
	}
	m.tokens.Record(ctx, int64(g.InputTokens), a.input...)
	if g.Operation != OpEmbeddings {
		m.tokens.Record(ctx, int64(g.OutputTokens), a.output...)
	}
}

// RecordQueueWait records how long a task waited in a batcher queue.
func (m *Metrics) RecordQueueWait(ctx context.Context, d time.Duration) {
	if m.Enabled() {
		m.queueWait.Record(ctx, d.Seconds())
	}
}

// RecordDecision records one scheduling cycle's latency.
func (m *Metrics) RecordDecision(ctx context.Context, d time.Duration) {
	if m.Enabled() {
		m.decision.Record(ctx, d.Seconds())
	}
}

// RecordCandidates records how many workers one scheduling cycle scored.
func (m *Metrics) RecordCandidates(ctx context.Context, n int) {
	if m.Enabled() {
		m.candidates.Record(ctx, int64(n))
	}
}

// RecordBatchSize records the number of tasks in one frame sent to a worker.
func (m *Metrics) RecordBatchSize(ctx context.Context, n int) {
	if m.Enabled() {
		m.batchSize.Record(ctx, int64(n))
	}
}

// RecordProving records one receipt batch's proving time and outcome.
func (m *Metrics) RecordProving(ctx context.Context, d time.Duration, ok bool) {
	if m.Enabled() {
		m.proving.Record(ctx, d.Seconds(), m.outcome(ok).rec...)
	}
}

// RecordLedgerWrite records one durable ledger write.
func (m *Metrics) RecordLedgerWrite(ctx context.Context, d time.Duration, ok bool) {
	if m.Enabled() {
		m.ledgerWrite.Record(ctx, d.Seconds(), m.outcome(ok).rec...)
	}
}

// RecordRecordRefused counts one completion record refused by check (one
// of the workers.Check* names, a fixed set).
func (m *Metrics) RecordRecordRefused(ctx context.Context, check string) {
	if m.Enabled() {
		m.refused.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attribute.String("check", check))))
	}
}

// RecordCountersign counts one countersign attempt by outcome (one of the
// Countersign* constants).
func (m *Metrics) RecordCountersign(ctx context.Context, outcome string) {
	if m.Enabled() {
		m.countersign.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
	}
}

// RecordWorkerRecords counts n completion records for an event (one of the
// Records* constants, or "refused_" + a refusal code).
func (m *Metrics) RecordWorkerRecords(ctx context.Context, event string, n int) {
	if m.Enabled() && n > 0 {
		m.records.Add(ctx, int64(n), metric.WithAttributes(attribute.String("event", event)))
	}
}

func (m *Metrics) outcome(ok bool) *measure {
	if ok {
		return &m.outcomeAttrs[0]
	}
	return &m.outcomeAttrs[1]
}

// measure is a precomputed attribute set in the option slices the
// instruments take, so recording it allocates nothing.
type measure struct {
	rec           []metric.RecordOption
	add           []metric.AddOption
	input, output []metric.RecordOption // token usage, by gen_ai.token.type
}

func newMeasure(s attribute.Set) measure {
	o := metric.WithAttributeSet(s)
	return measure{rec: []metric.RecordOption{o}, add: []metric.AddOption{o}}
}

// attrCache maps a label combination to its precomputed measure.
type attrCache[K comparable] struct {
	build func(K) measure
	mu    sync.RWMutex
	m     map[K]*measure
}

func (c *attrCache[K]) get(k K) *measure {
	c.mu.RLock()
	a, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return a
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.m[k]; ok {
		return a
	}
	if c.m == nil {
		c.m = map[K]*measure{}
	}
	if len(c.m) >= maxSeries {
		k = capModel(k)
		if a, ok := c.m[k]; ok {
			return a
		}
	}
	mm := c.build(k)
	c.m[k] = &mm
	return &mm
}

const otherModel = "_other"

// capModel replaces the model label of a key past the series limit.
func capModel[K comparable](k K) K {
	switch v := any(&k).(type) {
	case *httpKey:
		v.model = otherModel
	case *genKey:
		v.model = otherModel
		v.errType = ""
	}
	return k
}

type httpKey struct {
	method, route, model string
	status               int
}

func (k httpKey) attrs() measure {
	kv := []attribute.KeyValue{
		attribute.String("http.request.method", k.method),
		attribute.String("http.route", k.route),
		attribute.Int("http.response.status_code", k.status),
	}
	if k.model != "" {
		kv = append(kv, attribute.String("gen_ai.request.model", k.model))
	}
	return newMeasure(attribute.NewSet(kv...))
}

type genKey struct {
	op, model, errType string
}

func (k genKey) attrs() measure {
	kv := []attribute.KeyValue{
		attribute.String("gen_ai.operation.name", k.op),
		attribute.String("gen_ai.request.model", k.model),
	}
	if k.errType != "" {
		kv = append(kv, attribute.String("error.type", k.errType))
	}
	m := newMeasure(attribute.NewSet(kv...))
	in := metric.WithAttributeSet(attribute.NewSet(append(kv[:2:2], attribute.String("gen_ai.token.type", "input"))...))
	out := metric.WithAttributeSet(attribute.NewSet(append(kv[:2:2], attribute.String("gen_ai.token.type", "output"))...))
	m.input = []metric.RecordOption{in}
	m.output = []metric.RecordOption{out}
	return m
}

// normalMethod keeps the method label bounded, as the HTTP conventions ask.
func normalMethod(m string) string {
	switch m {
	case "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS":
		return m
	}
	return "_OTHER"
}
