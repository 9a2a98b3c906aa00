package workers

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/tollgate-ai/tollgate/internal/jsonx"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// The worker link's events are NDJSON: one JSON object per line, the
// encoding/json form of Event. Events are the link's hot path (a stream
// sends one per token), so both ends use hand-rolled code for the common
// shapes and encoding/json for the rest:
//
//   - appendEvent writes text deltas, done events (usage and completion
//     record) and failures without reflection, in exactly the field order
//     and names of Event's JSON tags; embeddings go through encoding/json.
//   - decodeDelta parses a text delta in that exact form, and only that
//     form; any other line (another event type, other key order, unknown
//     keys, a surrogate escape, invalid UTF-8) is declined and decoded by
//     encoding/json, so what is accepted never depends on which path ran.
//     The stream validator then checks the event either way.

// appendEvent appends ev as one JSON line (with its trailing newline).
func appendEvent(b []byte, ev *task.Event) ([]byte, error) {
	if len(ev.Embeddings) > 0 || (ev.Completion != nil && !timeEncodable(ev.Completion.Time)) ||
		len(ev.ToolCalls) > 0 || ev.Logprobs != nil || ev.Choice != 0 {
		raw, err := json.Marshal(ev)
		if err != nil {
			return b, err
		}
		return append(append(b, raw...), '\n'), nil
	}
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(ev.Index), 10)
	b = append(b, `,"t":`...)
	b = jsonx.AppendString(b, string(ev.Type))
	if ev.Text != "" {
		b = append(b, `,"text":`...)
		b = jsonx.AppendString(b, ev.Text)
	}
	if ev.Tokens != 0 {
		b = append(b, `,"tokens":`...)
		b = strconv.AppendInt(b, int64(ev.Tokens), 10)
	}
	if ev.FinishReason != "" {
		b = append(b, `,"finish_reason":`...)
		b = jsonx.AppendString(b, ev.FinishReason)
	}
	if u := ev.Usage; u != nil {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
		b = append(b, '}')
	}
	if c := ev.Completion; c != nil {
		b = append(b, `,"completion":{"request_id":`...)
		b = jsonx.AppendString(b, c.RequestID)
		b = append(b, `,"worker_id":`...)
		b = jsonx.AppendString(b, c.WorkerID)
		b = append(b, `,"model":`...)
		b = jsonx.AppendString(b, c.Model)
		b = append(b, `,"model_digest":`...)
		b = jsonx.AppendString(b, c.ModelDigest)
		b = append(b, `,"request_digest":`...)
		b = jsonx.AppendString(b, c.RequestDigest)
		b = append(b, `,"response_digest":`...)
		b = jsonx.AppendString(b, c.ResponseDigest)
		if c.Subject != "" {
			b = append(b, `,"subject":`...)
			b = jsonx.AppendString(b, c.Subject)
		}
		b = append(b, `,"prompt_tokens":`...)
		b = strconv.AppendInt(b, int64(c.PromptTokens), 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(c.CompletionTokens), 10)
		b = append(b, `,"time":"`...)
		b = c.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
		if c.FinishReason != "" {
			b = append(b, `,"finish_reason":`...)
			b = jsonx.AppendString(b, c.FinishReason)
		}
		b = append(b, '}')
	}
	if e := ev.Error; e != nil {
		b = append(b, `,"error":{"status":`...)
		b = strconv.AppendInt(b, int64(e.Status), 10)
		b = append(b, `,"type":`...)
		b = jsonx.AppendString(b, e.Type)
		if e.Code != "" {
			b = append(b, `,"code":`...)
			b = jsonx.AppendString(b, e.Code)
		}
		if e.Param != "" {
			b = append(b, `,"param":`...)
			b = jsonx.AppendString(b, e.Param)
		}
		b = append(b, `,"message":`...)
		b = jsonx.AppendString(b, e.Message)
		b = append(b, '}')
	}
	return append(b, "}\n"...), nil
}

// timeEncodable reports whether t has the RFC 3339 form encoding/json
// gives it (a four-digit year and a zone offset under 24 hours).
func timeEncodable(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}

// decodeEvent decodes one event line: a text delta on the fast path,
// anything else with encoding/json.
func decodeEvent(line []byte, ev *task.Event) error {
	if decodeDelta(line, ev) || decodeDone(line, ev) {
		return nil
	}
	*ev = task.Event{}
	return json.Unmarshal(line, ev)
}

// decodeDelta parses line when it is exactly
// {"i":N,"t":"delta"[,"text":"..."][,"tokens":N]} with optional spaces
// around it, and reports whether it did. It declines everything else,
// leaving ev for the caller to overwrite.
func decodeDelta(line []byte, ev *task.Event) bool {
	p := wireParser{jsonx.Scanner{B: line}}
	p.Space()
	if !p.Lit(`{"i":`) {
		return false
	}
	idx, ok := p.int()
	if !ok || !p.Lit(`,"t":"delta"`) {
		return false
	}
	*ev = task.Event{Index: idx, Type: task.EventDelta}
	if p.Lit(`,"text":`) {
		s, ok := p.String()
		if !ok {
			return false
		}
		ev.Text = s
	}
	if p.Lit(`,"tokens":`) {
		n, ok := p.int()
		if !ok {
			return false
		}
		ev.Tokens = n
	}
	if !p.Lit("}") {
		return false
	}
	p.Space()
	return p.I == len(p.B)
}

// decodeDone parses a done event of a generation task in exactly the form
// appendEvent writes it (finish reason, usage, completion record; no
// embeddings) and reports whether it did. Its time must read back to the
// same text, so that what is accepted matches encoding/json.
func decodeDone(line []byte, ev *task.Event) bool {
	p := wireParser{jsonx.Scanner{B: line}}
	p.Space()
	if !p.Lit(`{"i":`) {
		return false
	}
	idx, ok := p.int()
	if !ok || !p.Lit(`,"t":"done","finish_reason":`) {
		return false
	}
	*ev = task.Event{Index: idx, Type: task.EventDone}
	var u task.Usage
	var c task.Completion
	fields := []struct {
		lit string
		str *string
		num *int
	}{
		{lit: ``, str: &ev.FinishReason},
		{lit: `,"usage":{"prompt_tokens":`, num: &u.PromptTokens},
		{lit: `,"completion_tokens":`, num: &u.CompletionTokens},
		{lit: `},"completion":{"request_id":`, str: &c.RequestID},
		{lit: `,"worker_id":`, str: &c.WorkerID},
		{lit: `,"model":`, str: &c.Model},
		{lit: `,"model_digest":`, str: &c.ModelDigest},
		{lit: `,"request_digest":`, str: &c.RequestDigest},
		{lit: `,"response_digest":`, str: &c.ResponseDigest},
	}
	for _, f := range fields {
		if !p.Lit(f.lit) {
			return false
		}
		if f.str != nil {
			if *f.str, ok = p.String(); !ok {
				return false
			}
		} else if *f.num, ok = p.int(); !ok {
			return false
		}
	}
	if p.Lit(`,"subject":`) {
		if c.Subject, ok = p.String(); !ok {
			return false
		}
	}
	if !p.Lit(`,"prompt_tokens":`) {
		return false
	}
	if c.PromptTokens, ok = p.int(); !ok || !p.Lit(`,"completion_tokens":`) {
		return false
	}
	if c.CompletionTokens, ok = p.int(); !ok || !p.Lit(`,"time":"`) {
		return false
	}
	end := p.I
	for end < len(p.B) && p.B[end] != '"' {
		end++
	}
	raw := p.B[p.I:end]
	t, err := time.Parse(time.RFC3339Nano, string(raw))
	if err != nil || !timeEncodable(t) || string(t.AppendFormat(nil, time.RFC3339Nano)) != string(raw) {
		return false
	}
	c.Time = t
	p.I = end
	if !p.Lit(`"`) {
		return false
	}
	if p.Lit(`,"finish_reason":`) {
		if c.FinishReason, ok = p.String(); !ok {
			return false
		}
	}
	if !p.Lit(`}}`) {
		return false
	}
	p.Space()
	if p.I != len(p.B) {
		return false
	}
	ev.Usage, ev.Completion = &u, &c
	return true
}

// wireParser reads the fixed shapes decodeDelta and decodeDone accept.
type wireParser struct{ jsonx.Scanner }

// int reads a JSON integer that fits in 32 bits (larger values are left to
// encoding/json, whose error then names them).
func (p *wireParser) int() (int, bool) { return p.Int(9) }
