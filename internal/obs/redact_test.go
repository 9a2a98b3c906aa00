package obs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactHandler(t *testing.T) {
	sec := NewSecrets()
	sec.Add("Zq7XvLw2NpR8sT4u", "abcd", "0123456789abcdef0123456789abcdef")
	var buf bytes.Buffer
	log := slog.New(NewRedactHandler(slog.NewJSONHandler(&buf, nil), sec))
	for _, tc := range []struct {
		name string
		log  func()
		leak []string
	}{
		{"message", func() { log.Info("key Zq7XvLw2NpR8sT4u seen") }, []string{"Zq7XvLw2NpR8sT4u"}},
		{"string attr", func() { log.Info("x", "path", "/v1/Zq7XvLw2NpR8sT4u") }, []string{"Zq7XvLw2NpR8sT4u"}},
		{"error attr", func() {
			log.Info("x", "err", fmt.Errorf("wrapped: %w", errors.New("tok 0123456789abcdef0123456789abcdef")))
		}, []string{"0123456789abcdef0123456789abcdef"}},
		{"group", func() { log.Info("x", slog.Group("g", "v", "Zq7XvLw2NpR8sT4u")) }, []string{"Zq7XvLw2NpR8sT4u"}},
		{"struct", func() { log.Info("x", "req", struct{ Token string }{"Zq7XvLw2NpR8sT4u"}) }, []string{"Zq7XvLw2NpR8sT4u"}},
		{"with attrs", func() { log.With("k", "Zq7XvLw2NpR8sT4u").Info("x") }, []string{"Zq7XvLw2NpR8sT4u"}},
		{"sensitive key", func() { log.Info("x", "provider_token", "anything-at-all") }, []string{"anything-at-all"}},
		{"bearer unregistered", func() { log.Info("x", "h", "Authorization: bEaReR\tunregistered-token-1") }, []string{"unregistered-token-1"}},
		{"sk shape", func() { log.Info("x", "err", "The model 'sk-unknown-0123' does not exist") }, []string{"sk-unknown-0123"}},
		{"pt shape", func() { log.Info("pt-unknown-0123 refused") }, []string{"pt-unknown-0123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.log()
			for _, l := range tc.leak {
				if strings.Contains(buf.String(), l) {
					t.Errorf("leaked %q: %s", l, buf.String())
				}
			}
			if !strings.Contains(buf.String(), Redacted) {
				t.Errorf("nothing redacted: %s", buf.String())
			}
		})
	}
	// Short values are not secrets; ordinary text is untouched.
	buf.Reset()
	log.Info("abcd is fine", "model", "tiny", "accept", "accept-encoding", "n", 3)
	if strings.Contains(buf.String(), Redacted) {
		t.Errorf("redacted ordinary text: %s", buf.String())
	}
	sec.Forget("Zq7XvLw2NpR8sT4u")
	buf.Reset()
	log.Info("Zq7XvLw2NpR8sT4u")
	if strings.Contains(buf.String(), Redacted) {
		t.Errorf("a forgotten secret is still redacted: %s", buf.String())
	}
}

// BenchmarkRedactHandler is a typical request log line with ten
// registered secrets, against the bare JSON handler.
func BenchmarkRedactHandler(b *testing.B) {
	sec := NewSecrets()
	for i := range 10 {
		sec.Add(fmt.Sprintf("sk-secret-%032d", i))
	}
	for _, redact := range []bool{false, true} {
		b.Run(fmt.Sprint("redact=", redact), func(b *testing.B) {
			var h slog.Handler = slog.NewJSONHandler(discard{}, nil)
			if redact {
				h = NewRedactHandler(h, sec)
			}
			log := slog.New(h)
			err := errors.New("404 invalid_request_error: The model 'org/model-x' does not exist")
			b.ReportAllocs()
			for b.Loop() {
				log.Info("request failed", "request_id", "req_727esob7qrlyia7xcxekatz5xf", "status", 404, "code", "model_not_found", "err", err)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
