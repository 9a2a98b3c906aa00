package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// partialDone is the worker's last event for a generation stopped after
// tokens tokens: a record of exactly those.
func partialDone(t *task.Task, finish string, tokens int, e *task.EventError) task.Event {
	return task.Event{Type: task.EventDone, FinishReason: finish, Usage: &task.Usage{PromptTokens: 3, CompletionTokens: tokens},
		Completion: &task.Completion{RequestID: t.RequestID, Subject: t.Subject, Model: t.Model, PromptTokens: 3, CompletionTokens: tokens, FinishReason: finish},
		Error:      e}
}

var errCancelledEvent = &task.EventError{Status: workers.StatusClientClosed, Type: apierr.TypeInvalidRequest, Code: workers.CodeCancelled, Message: "the request was cancelled"}

// receiptStatus reads a receipt with the admin key: its status and body.
func (h *harness) receiptStatus(t *testing.T, id string) (string, map[string]any) {
	t.Helper()
	resp := h.do(t, "GET", "/v1/receipts/"+id, adminKey, "")
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		return "", nil
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	s, _ := r["status"].(string)
	return s, r
}

// waitReceipt polls until the receipt named id resolves (the record is
// written after the client left), bounded by hangGuard.
func (h *harness) waitReceipt(t *testing.T, id string) (string, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		if s, r := h.receiptStatus(t, id); s != "" || time.Now().After(deadline) {
			return s, r
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAbortedStreamReceiptResolves plays a streaming client that holds the
// X-Tollgate-Receipt of its headers while the stream ends early: it goes
// away after the first token, or the worker fails, with or without a
// record of what it generated. The ID must always resolve: to the record
// (billed for the tokens generated) or to a void receipt — never 404.
func TestAbortedStreamReceiptResolves(t *testing.T) {
	tests := []struct {
		name       string
		leave      bool // the client goes away after the first token
		end        func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error
		wantStatus string
		wantTokens float64
		wantErr    string // the error event the client sees ("" when it left)
	}{
		{"client gone, worker records what it generated", true, func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			<-ctx.Done() // the scheduler stops the task; the worker reports
			onEvent(task.Event{Type: task.EventDelta, Text: " upon", Tokens: 1})
			onEvent(partialDone(tk, task.FinishCancelled, 2, errCancelledEvent))
			return context.Cause(ctx)
		}, "pending", 2, ""},
		{"client gone, no record came", true, func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}, "void", 0, ""},
		{"worker link fails mid-stream", false, func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			return apierr.Unavailable("worker_unavailable", "the worker failed; retry", errors.New("EOF"))
		}, "void", 0, "worker_unavailable"},
		{"upstream fails after tokens", false, func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
			return onEvent(partialDone(tk, task.FinishError, 1, &task.EventError{Status: 502, Type: apierr.TypeServer, Code: "upstream_error", Message: "the upstream failed"}))
		}, "pending", 1, "upstream_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			ended := make(chan struct{})
			h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
				defer close(ended)
				if err := onEvent(task.Event{Type: task.EventDelta, Text: "Once", Tokens: 1}); err != nil {
					return err
				}
				return tc.end(ctx, tk, onEvent)
			}
			resp := h.do(t, "POST", "/v1/chat/completions", testKey, `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			id := resp.Header.Get(HeaderReceipt)
			if resp.StatusCode != 200 || id == "" {
				t.Fatalf("status %d receipt %q", resp.StatusCode, id)
			}
			if tc.leave {
				r := bufio.NewReader(resp.Body)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						t.Fatal(err)
					}
					if strings.Contains(line, "Once") {
						break
					}
				}
				resp.Body.Close() // mid-stream
				h.client.CloseIdleConnections()
			} else {
				events := sseEvents(t, resp.Body)
				resp.Body.Close()
				last := events[len(events)-1]
				if !strings.Contains(last, `"code":"`+tc.wantErr+`"`) {
					t.Errorf("last event %s, want error %s", last, tc.wantErr)
				}
			}
			select {
			case <-ended:
			case <-time.After(hangGuard):
				t.Fatal("the dispatch never ended after the client left")
			}
			status, r := h.waitReceipt(t, id)
			if status != tc.wantStatus {
				t.Fatalf("the receipt ID the client holds resolves to %q (%v), want %q", status, r, tc.wantStatus)
			}
			if status == "pending" && r["completion_tokens"] != tc.wantTokens {
				t.Errorf("billed %v completion tokens, want the %v generated", r["completion_tokens"], tc.wantTokens)
			}
			if status == "void" && r["error"] == "" {
				t.Error("a void receipt without a reason")
			}
		})
	}
}

// TestUnaryClientGone plays attack 7: a client that asked for one JSON
// answer hangs up mid-generation. The gateway must notice the closed
// connection, stop the work, and record what was generated (finish reason
// cancelled).
func TestUnaryClientGone(t *testing.T) {
	h := newHarness(t, nil)
	cause := make(chan error, 1)
	started := make(chan struct{})
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		close(started)
		select {
		case <-ctx.Done():
		case <-time.After(hangGuard):
			cause <- errors.New("the request was never cancelled")
			return onEvent(partialDone(tk, "stop", 9, nil))
		}
		cause <- context.Cause(ctx)
		onEvent(task.Event{Type: task.EventDelta, Text: "Once upon", Tokens: 2})
		onEvent(partialDone(tk, task.FinishCancelled, 2, errCancelledEvent))
		return context.Cause(ctx)
	}
	conn, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(chatOK))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set(HeaderRequestID, "req-unary-gone")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Close() // the client hangs up before the answer
	var why error
	select {
	case why = <-cause:
	case <-time.After(2 * hangGuard):
		t.Fatal("the dispatch never ended")
	}
	var ae *apierr.Error
	if !errors.As(why, &ae) || ae.Status != workers.StatusClientClosed {
		t.Fatalf("the work was not cancelled for the client's going away: %v", why)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		h.ledger.mu.Lock()
		var c *task.Completion
		for _, rc := range h.ledger.recorded {
			if strings.HasPrefix(rc.RequestID, "req-unary-gone.") {
				c = rc
			}
		}
		h.ledger.mu.Unlock()
		if c != nil {
			if c.FinishReason != task.FinishCancelled || c.CompletionTokens != 2 {
				t.Errorf("record %+v, want the 2 tokens generated, finish cancelled", c)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no record of the tokens generated before the client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnaryDeadlineMidGeneration: an unstreamed request whose deadline
// passes mid-generation gets its 504, billed for what was generated and
// naming the receipt, so the ID resolves.
func TestUnaryDeadlineMidGeneration(t *testing.T) {
	h := newHarness(t, nil)
	h.disp.script = func(ctx context.Context, tk *task.Task, onEvent func(task.Event) error) error {
		<-ctx.Done() // the deadline passes; the scheduler stops the task
		onEvent(task.Event{Type: task.EventDelta, Text: "Once upon a", Tokens: 3})
		onEvent(partialDone(tk, task.FinishCancelled, 3, &task.EventError{Status: 504, Type: apierr.TypeTimeout, Code: "deadline_exceeded", Message: "the request's deadline passed"}))
		return apierr.Timeout("deadline_exceeded", "the request's deadline passed before its answer was ready", nil)
	}
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK, HeaderDeadline, "20")
	body := readAll(t, resp)
	id := resp.Header.Get(HeaderReceipt)
	if resp.StatusCode != 504 || !strings.Contains(body, "deadline_exceeded") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if status, r := h.receiptStatus(t, id); status != "pending" || r["completion_tokens"] != 3.0 {
		t.Errorf("receipt %q: %q %v, want the 3 tokens generated", id, status, r)
	}
}

// hangGuard bounds waits on other goroutines so a bug fails a test instead
// of hanging it; never a timing assertion.
const hangGuard = 10 * time.Second
