package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestLoggerStampsIDs(t *testing.T) {
	p, _ := tracingProvider(t)
	ctx, span := p.Start(context.Background(), "req", KindServer)
	defer span.End()
	sc := ParseTraceparent(Traceparent(ctx))

	tests := []struct {
		name string
		ctx  context.Context
		args []any
		want map[string]string // "" value: key must be absent
	}{
		{"request and trace", WithRequestID(ctx, "req_1"), nil,
			map[string]string{"request_id": "req_1", "trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}},
		{"explicit request id wins", WithRequestID(ctx, "req_1"), []any{"request_id", "req_own"},
			map[string]string{"request_id": "req_own"}},
		{"no ids", context.Background(), nil,
			map[string]string{"request_id": "", "trace_id": "", "span_id": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := Logger(LogConfig{Output: &buf}).With("worker", "w1")
			log.InfoContext(tc.ctx, "served", tc.args...)
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("not one JSON line: %q", buf.String())
			}
			for k, v := range tc.want {
				got, ok := rec[k]
				if v == "" && ok {
					t.Errorf("%s = %v, want absent", k, got)
				}
				if v != "" && got != v {
					t.Errorf("%s = %v, want %s", k, got, v)
				}
			}
			if strings.Count(buf.String(), `"request_id"`) > 1 {
				t.Errorf("request_id repeated: %s", buf.String())
			}
			if rec["worker"] != "w1" {
				t.Errorf("WithAttrs lost: %s", buf.String())
			}
		})
	}
}

func TestLoggerText(t *testing.T) {
	var buf bytes.Buffer
	log := Logger(LogConfig{Format: "text", Level: "warn", Output: &buf})
	log.Info("hidden")
	log.WarnContext(WithRequestID(context.Background(), "req_2"), "shown")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "request_id=req_2") {
		t.Errorf("text log = %q", got)
	}
}

func TestLogConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  LogConfig
		ok   bool
	}{
		{"zero", LogConfig{}, true},
		{"text debug", LogConfig{Format: "text", Level: "debug"}, true},
		{"bad format", LogConfig{Format: "xml"}, false},
		{"bad level", LogConfig{Level: "loud"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
