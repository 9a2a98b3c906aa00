package obs

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
)

// RepeatLimit configures NewRepeatLimitHandler.
type RepeatLimit struct {
	// Interval is how often a repeating record is let through (default 1m).
	Interval time.Duration
	// Level is the lowest level limited (default Warn); records below it
	// pass untouched.
	Level slog.Level
	// Keys are the attributes that, with the level and message, say which
	// records repeat one another (e.g. "worker": one unreachable worker's
	// errors are one stream, another worker's another). Attributes added
	// with Logger.With count as well as the record's own.
	Keys []string
	// Clock is injected for tests (default clock.Real).
	Clock clock.Clock
	// MaxStreams bounds the streams remembered (default 4096); beyond it
	// records pass untouched rather than grow the table.
	MaxStreams int
}

// RepeatLimitHandler passes the first record of each stream (a state
// change: something starts failing) and then at most one per Interval,
// carrying "repeats", the number it held back since the last one. A stream
// quiet for an Interval starts afresh. A prover that cannot reach a worker
// logs its ERROR three times a second; behind this it logs once a minute.
type RepeatLimitHandler struct {
	next  slog.Handler
	cfg   RepeatLimit
	pre   []slog.Attr // from WithAttrs, top level only
	group string      // non-empty once WithGroup was called
	st    *repeatState
}

type repeatState struct {
	mu      sync.Mutex
	streams map[string]*repeatStream
}

type repeatStream struct {
	lastLog, lastSeen time.Time
	held              int
}

// NewRepeatLimitHandler limits repeats of next's records (see RepeatLimit).
func NewRepeatLimitHandler(next slog.Handler, cfg RepeatLimit) *RepeatLimitHandler {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 4096
	}
	if cfg.Level == 0 {
		cfg.Level = slog.LevelWarn
	}
	return &RepeatLimitHandler{next: next, cfg: cfg, st: &repeatState{streams: map[string]*repeatStream{}}}
}

// LimitRepeats wraps logger's handler in a RepeatLimitHandler.
func LimitRepeats(logger *slog.Logger, cfg RepeatLimit) *slog.Logger {
	return slog.New(NewRepeatLimitHandler(logger.Handler(), cfg))
}

func (h *RepeatLimitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *RepeatLimitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.cfg.Level {
		return h.next.Handle(ctx, r)
	}
	held, ok := h.admit(h.streamKey(r), h.cfg.Clock.Now())
	if !ok {
		return nil
	}
	if held > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("repeats", held))
	}
	return h.next.Handle(ctx, r)
}

// admit reports whether a record of stream key is let through at now and
// how many were held back before it.
func (h *RepeatLimitHandler) admit(key string, now time.Time) (int, bool) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	s := h.st.streams[key]
	if s == nil || now.Sub(s.lastSeen) >= h.cfg.Interval {
		if s == nil && len(h.st.streams) >= h.cfg.MaxStreams {
			h.pruneLocked(now)
			if len(h.st.streams) >= h.cfg.MaxStreams {
				return 0, true
			}
		}
		h.st.streams[key] = &repeatStream{lastLog: now, lastSeen: now}
		return 0, true
	}
	s.lastSeen = now
	if now.Sub(s.lastLog) < h.cfg.Interval {
		s.held++
		return 0, false
	}
	held := s.held
	s.lastLog, s.held = now, 0
	return held, true
}

// pruneLocked forgets streams quiet for an Interval (they would start
// afresh anyway).
func (h *RepeatLimitHandler) pruneLocked(now time.Time) {
	for k, s := range h.st.streams {
		if now.Sub(s.lastSeen) >= h.cfg.Interval {
			delete(h.st.streams, k)
		}
	}
}

func (h *RepeatLimitHandler) streamKey(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	for _, k := range h.cfg.Keys {
		b.WriteByte(0)
		b.WriteString(h.value(r, k))
	}
	return b.String()
}

// value is the key attribute's value: the record's own, else one from
// WithAttrs (attributes inside a group are not keys).
func (h *RepeatLimitHandler) value(r slog.Record, key string) string {
	v, found := "", false
	if h.group == "" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v, found = a.Value.String(), true
				return false
			}
			return true
		})
	}
	if !found {
		for _, a := range h.pre {
			if a.Key == key {
				v = a.Value.String()
			}
		}
	}
	return v
}

func (h *RepeatLimitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	if h.group == "" {
		c.pre = append(append([]slog.Attr(nil), h.pre...), as...)
	}
	return &c
}

func (h *RepeatLimitHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = name
	return &c
}
