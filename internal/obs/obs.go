// Package obs is Tollgate's observability plumbing: OpenTelemetry tracing
// (W3C trace context in and out, OTLP/HTTP export when configured), metrics
// through the OTel SDK with a Prometheus exporter on a private registry, and
// the structured logger that stamps request and trace IDs on every line.
//
// Everything is off by default and then costs next to nothing: with no OTLP
// endpoint the span helpers return without touching the context, and with
// Prometheus off every Record method returns after one flag check. Callers
// need no OpenTelemetry imports: spans come wrapped in Span, instruments in
// Metrics, and trace parents travel as plain traceparent strings.
package obs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span and instrument.
const ScopeName = "github.com/tollgate-ai/tollgate"

// Config is the observability section of the configuration file.
type Config struct {
	// ServiceName is service.name on spans and target_info (e.g.
	// "tollgate-gateway"). Default "tollgate".
	ServiceName string `yaml:"service_name"`
	// OTLPEndpoint is where spans are exported: a URL
	// ("http://collector:4318") or host:port. Empty turns tracing off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// OTLPProtocol is "http" (OTLP/HTTP protobuf, the default). "grpc" is
	// not built in: point at the collector's HTTP port (4318) instead.
	OTLPProtocol string `yaml:"otlp_protocol"`
	// OTLPInsecure sends to a host:port endpoint over plain HTTP. A URL
	// endpoint's scheme decides on its own.
	OTLPInsecure bool `yaml:"otlp_insecure"`
	// SampleRatio is the share of new traces sampled, in [0, 1]; 0 means
	// the default, 1. A sampled parent from the client is always honoured.
	SampleRatio float64 `yaml:"sample_ratio"`
	// Prometheus turns the metrics on, served by Provider.MetricsHandler.
	Prometheus bool `yaml:"prometheus"`
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch c.OTLPProtocol {
	case "", "http", "http/protobuf":
	case "grpc":
		return errors.New("obs: otlp_protocol: grpc is not built in; use \"http\" and the collector's OTLP/HTTP port (4318)")
	default:
		return fmt.Errorf("obs: otlp_protocol: %q is not \"http\"", c.OTLPProtocol)
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 || c.SampleRatio != c.SampleRatio {
		return fmt.Errorf("obs: sample_ratio: %v is outside [0, 1]", c.SampleRatio)
	}
	if e := c.OTLPEndpoint; e != "" {
		if strings.Contains(e, "://") {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("obs: otlp_endpoint: %q is not an http(s) URL", e)
			}
		} else if _, err := url.Parse("http://" + e); err != nil || strings.ContainsAny(e, "/ ") {
			return fmt.Errorf("obs: otlp_endpoint: %q is not host:port", e)
		}
	}
	return nil
}

// Option adjusts Setup beyond the configuration file.
type Option func(*options)

type options struct {
	spanExporters []sdktrace.SpanExporter
	logger        *slog.Logger
}

// WithLogger reports OpenTelemetry's own errors (a failed export, a
// failing gauge callback) to logger instead of the standard log package.
// OpenTelemetry's error handler is process-wide, so the last Setup wins.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithSpanExporter adds an exporter that receives every ended span
// synchronously (tests pass tracetest.NewInMemoryExporter()). It turns
// tracing on even without an OTLP endpoint.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return func(o *options) { o.spanExporters = append(o.spanExporters, e) }
}

// Provider holds the tracer, the meter's instruments and the Prometheus
// registry. A nil *Provider is valid and fully off.
type Provider struct {
	tracer   trace.Tracer
	tracing  bool
	metrics  *Metrics
	registry *prometheus.Registry
	recent   *Recent
}

// Setup builds the providers from cfg. The returned shutdown flushes and
// stops the exporters; call it once on exit.
func Setup(ctx context.Context, cfg Config, opts ...Option) (*Provider, func(context.Context) error, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger != nil {
		l := o.logger
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { l.Warn("opentelemetry", "err", err) }))
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "tollgate"
	}
	if cfg.SampleRatio == 0 {
		cfg.SampleRatio = 1
	}
	res := resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))
	var stops []func(context.Context) error
	shutdown := func(ctx context.Context) error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i](ctx))
		}
		return errors.Join(errs...)
	}
	p := &Provider{tracer: tracenoop.NewTracerProvider().Tracer(ScopeName), recent: new(Recent)}

	tpOpts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	}
	for _, e := range o.spanExporters {
		tpOpts = append(tpOpts, sdktrace.WithSyncer(e))
	}
	if cfg.OTLPEndpoint != "" {
		var eo []otlptracehttp.Option
		if strings.Contains(cfg.OTLPEndpoint, "://") {
			eo = append(eo, otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint))
		} else {
			eo = append(eo, otlptracehttp.WithEndpoint(cfg.OTLPEndpoint))
			if cfg.OTLPInsecure {
				eo = append(eo, otlptracehttp.WithInsecure())
			}
		}
		exp, err := otlptracehttp.New(ctx, eo...)
		if err != nil {
			return nil, nil, fmt.Errorf("obs: otlp exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	if cfg.OTLPEndpoint != "" || len(o.spanExporters) > 0 {
		tp := sdktrace.NewTracerProvider(tpOpts...)
		stops = append(stops, tp.Shutdown)
		p.tracer, p.tracing = tp.Tracer(ScopeName), true
	}

	var mp metric.MeterProvider = metricnoop.NewMeterProvider()
	if cfg.Prometheus {
		p.registry = prometheus.NewRegistry()
		// The standard go_* (goroutines, heap, GC, GOGC/GOMEMLIMIT) and
		// process_* (RSS, fds, CPU) series, for leak and soak watching.
		p.registry.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(p.registry), otelprom.WithoutScopeInfo())
		if err != nil {
			_ = shutdown(ctx)
			return nil, nil, fmt.Errorf("obs: prometheus exporter: %w", err)
		}
		mpOpts := []sdkmetric.Option{sdkmetric.WithReader(exp), sdkmetric.WithResource(res)}
		if !p.tracing {
			// No sampled spans, so no exemplars: skip the reservoirs.
			mpOpts = append(mpOpts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
		}
		smp := sdkmetric.NewMeterProvider(mpOpts...)
		stops = append(stops, smp.Shutdown)
		mp = smp
	}
	m, err := newMetrics(mp.Meter(ScopeName), cfg.Prometheus)
	if err != nil {
		_ = shutdown(ctx)
		return nil, nil, err
	}
	p.metrics = m
	return p, shutdown, nil
}

// Tracing reports whether spans are recorded at all.
func (p *Provider) Tracing() bool { return p != nil && p.tracing }

// Metrics returns the instruments (off, never nil, on a nil Provider).
func (p *Provider) Metrics() *Metrics {
	if p == nil || p.metrics == nil {
		return offMetrics
	}
	return p.metrics
}

// Recent returns the window of recent inference requests for the status
// page (nil, which is valid and empty, on a nil Provider).
func (p *Provider) Recent() *Recent {
	if p == nil {
		return nil
	}
	return p.recent
}

// MetricsHandler serves the Prometheus exposition of the private registry
// (404 when Prometheus is off). Mount it on the worker's net/http mux.
func (p *Provider) MetricsHandler() http.Handler {
	if p == nil || p.registry == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
}

// FasthttpMetricsHandler is MetricsHandler for the gateway's fasthttp server.
func (p *Provider) FasthttpMetricsHandler() fasthttp.RequestHandler {
	return fasthttpadaptor.NewFastHTTPHandler(p.MetricsHandler())
}

// WriteMetrics writes the Prometheus text exposition to w (nothing when
// Prometheus is off).
func (p *Provider) WriteMetrics(w io.Writer) error {
	if p == nil || p.registry == nil {
		return nil
	}
	families, err := p.registry.Gather()
	if err != nil {
		return fmt.Errorf("obs: gather metrics: %w", err)
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("obs: encode metrics: %w", err)
		}
	}
	return nil
}
