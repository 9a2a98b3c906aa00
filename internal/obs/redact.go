package obs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
)

// Redacted replaces a secret in a log line.
const Redacted = "[REDACTED]"

// minSecretLen: shorter values are not registered (they would redact
// ordinary words); configuration requires longer credentials anyway.
const minSecretLen = 6

// Secrets is the set of credentials a process must never log: API keys,
// admin keys, provider tokens, session tokens, countersign credentials.
// Whoever learns a secret (configuration loading, the registrar issuing a
// session) adds it; whoever retires one forgets it. Safe for concurrent
// use.
type Secrets struct {
	mu   sync.RWMutex
	set  map[string]struct{}
	list []string // the set, longest first (a secret inside another is redacted after it)
}

// NewSecrets returns an empty set.
func NewSecrets() *Secrets { return &Secrets{set: map[string]struct{}{}} }

// processSecrets is the set every logger built by Logger redacts.
var processSecrets = NewSecrets()

// ProcessSecrets is the process-wide set that Logger's handlers redact.
func ProcessSecrets() *Secrets { return processSecrets }

// AddSecrets registers secrets with the process-wide set.
func AddSecrets(secrets ...string) { processSecrets.Add(secrets...) }

// ForgetSecret removes a retired secret (a replaced session token) from
// the process-wide set, so the set does not grow with churn.
func ForgetSecret(s string) { processSecrets.Forget(s) }

// Add registers secrets (those shorter than 6 bytes are ignored).
func (s *Secrets) Add(secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, v := range secrets {
		if len(v) < minSecretLen {
			continue
		}
		if _, ok := s.set[v]; !ok {
			s.set[v] = struct{}{}
			changed = true
		}
	}
	if changed {
		s.rebuildLocked()
	}
}

// Forget removes a secret.
func (s *Secrets) Forget(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[v]; ok {
		delete(s.set, v)
		s.rebuildLocked()
	}
}

func (s *Secrets) rebuildLocked() {
	list := make([]string, 0, len(s.set))
	for v := range s.set {
		list = append(list, v)
	}
	// Longest first, so a secret containing another is redacted whole.
	for i := 1; i < len(list); i++ {
		for j := i; j > 0 && len(list[j]) > len(list[j-1]); j-- {
			list[j], list[j-1] = list[j-1], list[j]
		}
	}
	s.list = list
}

// bearerLike matches credentials by shape, whether or not they are
// registered: an Authorization-style "Bearer <token>" and the key and
// token formats Tollgate generates (sk-…, pt-…).
var bearerLike = regexp.MustCompile(`(?i)(bearer)([\s:=]+)[^\s"',;\\]+|\b(sk|pt)-[A-Za-z0-9_\-]{6,}`)

// Redact returns v with every registered secret and every bearer-looking
// value replaced by Redacted.
func (s *Secrets) Redact(v string) string {
	if len(v) < minSecretLen {
		return v
	}
	s.mu.RLock()
	for _, sec := range s.list {
		if strings.Contains(v, sec) {
			v = strings.ReplaceAll(v, sec, Redacted)
		}
	}
	s.mu.RUnlock()
	if mayLookLikeBearer(v) {
		v = bearerLike.ReplaceAllStringFunc(v, func(m string) string {
			if sub := bearerLike.FindStringSubmatch(m); sub[1] != "" {
				if strings.HasPrefix(m[len(sub[1])+len(sub[2]):], Redacted) {
					return m
				}
				return sub[1] + sub[2] + Redacted
			}
			return Redacted
		})
	}
	return v
}

// mayLookLikeBearer is a cheap filter before the regular expression.
func mayLookLikeBearer(v string) bool {
	if strings.Contains(v, "sk-") || strings.Contains(v, "pt-") || strings.Contains(v, "SK-") || strings.Contains(v, "PT-") {
		return true
	}
	for i := 0; i+6 <= len(v); i++ {
		if v[i]|0x20 == 'b' && strings.EqualFold(v[i:i+6], "bearer") {
			return true
		}
	}
	return false
}

// sensitiveKeys are attribute keys whose values are always redacted.
var sensitiveKeys = map[string]bool{
	"authorization": true, "api_key": true, "admin_key": true, "provider_token": true,
	"session_token": true, "token": true, "secret": true, "password": true, "credential": true,
}

// RedactHandler removes secrets from every record before next sees it:
// the message, every attribute value (errors, Stringers and structured
// values included, inside groups too) and values under sensitive keys.
type RedactHandler struct {
	next    slog.Handler
	secrets *Secrets
}

// NewRedactHandler wraps next; nil secrets means the process-wide set.
func NewRedactHandler(next slog.Handler, secrets *Secrets) *RedactHandler {
	if secrets == nil {
		secrets = processSecrets
	}
	return &RedactHandler{next: next, secrets: secrets}
}

// Enabled implements slog.Handler.
func (h *RedactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *RedactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.secrets.Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *RedactHandler) attr(a slog.Attr) slog.Attr {
	if sensitiveKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, Redacted)
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.secrets.Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		as := make([]slog.Attr, len(g))
		for i, x := range g {
			as[i] = h.attr(x)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(as...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.secrets.Redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.secrets.Redact(x.String()))
		case []byte:
			return slog.String(a.Key, h.secrets.Redact(string(x)))
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return slog.String(a.Key, h.secrets.Redact(fmt.Sprintf("%+v", x)))
			}
			if red := h.secrets.Redact(string(b)); red != string(b) {
				return slog.String(a.Key, red)
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// WithAttrs implements slog.Handler (the attributes are redacted now).
func (h *RedactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return &RedactHandler{next: h.next.WithAttrs(red), secrets: h.secrets}
}

// WithGroup implements slog.Handler.
func (h *RedactHandler) WithGroup(name string) slog.Handler {
	return &RedactHandler{next: h.next.WithGroup(name), secrets: h.secrets}
}
