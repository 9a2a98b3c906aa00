package obs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
)

// LogConfig is the logging section of the configuration file.
type LogConfig struct {
	// Format is "json" (production, the default) or "text" (development).
	Format string `yaml:"format"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `yaml:"level"`
	// Output defaults to stderr.
	Output io.Writer `yaml:"-"`
	// Secrets are redacted from every record (nil: the process-wide set,
	// see AddSecrets).
	Secrets *Secrets `yaml:"-"`
}

// Validate names the bad field.
func (c *LogConfig) Validate() error {
	switch c.Format {
	case "", "json", "text":
	default:
		return fmt.Errorf("obs: log format: %q is not \"json\" or \"text\"", c.Format)
	}
	var l slog.Level
	if c.Level != "" {
		if err := l.UnmarshalText([]byte(c.Level)); err != nil {
			return fmt.Errorf("obs: log level: %q is not debug, info, warn or error", c.Level)
		}
	}
	return nil
}

// Logger builds the process logger: JSON or text, wrapped so that every
// record logged with a context carries request_id, trace_id and span_id,
// and so that no registered secret or bearer-looking value is written
// (see RedactHandler).
// An invalid config falls back to the defaults; call Validate first.
func Logger(cfg LogConfig) *slog.Logger {
	out := cfg.Output
	if out == nil {
		out = os.Stderr
	}
	var level slog.Level
	if cfg.Level != "" {
		_ = level.UnmarshalText([]byte(cfg.Level)) // invalid: info
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.Format == "text" {
		h = slog.NewTextHandler(out, opts)
	} else {
		h = slog.NewJSONHandler(out, opts)
	}
	return slog.New(NewLogHandler(NewRedactHandler(h, cfg.Secrets)))
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request ID for the log handler.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request ID in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// LogHandler adds request_id (from WithRequestID), trace_id and span_id
// (from the span in ctx) to each record logged with a context, unless the
// record already has a request_id of its own.
type LogHandler struct{ next slog.Handler }

// NewLogHandler wraps next.
func NewLogHandler(next slog.Handler) *LogHandler { return &LogHandler{next: next} }

// Enabled implements slog.Handler.
func (h *LogHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if id := RequestID(ctx); id != "" && !hasAttr(r, "request_id") {
			r.AddAttrs(slog.String("request_id", id))
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
	}
	return h.next.Handle(ctx, r)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}
