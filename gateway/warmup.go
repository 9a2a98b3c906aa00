package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// DefaultWarmUp is how long after start a known model with no worker yet
// answers 503 rather than 404: long enough for workers, which heartbeat
// every second, to notice the restart and register again.
const DefaultWarmUp = 30 * time.Second

// CodeModelWarmingUp answers a request for a known model during warm-up.
const CodeModelWarmingUp = "model_warming_up"

// warmUpRetry is the Retry-After of a warming-up answer (at most).
const warmUpRetry = 2 * time.Second

// warmingDispatcher turns the dispatcher's 404 model_not_found for a
// model the gateway knows (Deps.KnownModels: configured or allowed
// models) into 503 model_warming_up with Retry-After while the gateway is
// younger than its warm-up window. After a restart the registry is empty
// until workers re-register; a client told 404 would give up on a model
// that exists.
type warmingDispatcher struct {
	Dispatcher
	clock clock.Clock
	until time.Time
	known func() []string
}

func newWarmingDispatcher(d Dispatcher, c clock.Clock, window time.Duration, known func() []string) Dispatcher {
	if known == nil || window < 0 {
		return d
	}
	if window == 0 {
		window = DefaultWarmUp
	}
	return &warmingDispatcher{Dispatcher: d, clock: c, until: c.Now().Add(window), known: known}
}

func (w *warmingDispatcher) Dispatch(ctx context.Context, t *task.Task, onEvent func(task.Event) error) error {
	err := w.Dispatcher.Dispatch(ctx, t, onEvent)
	if err == nil || t == nil {
		return err
	}
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Code != "model_not_found" {
		return err
	}
	left := w.until.Sub(w.clock.Now())
	if left <= 0 || !w.isKnown(t.Model) {
		return err
	}
	// Workers re-register within a heartbeat or two: ask for a retry soon,
	// not at the end of the window.
	return &apierr.Error{Status: http.StatusServiceUnavailable, Type: apierr.TypeServer, Code: CodeModelWarmingUp, Param: "model",
		Message:    "The gateway restarted recently and no worker serving this model has registered yet; retry shortly.",
		RetryAfter: min(left, warmUpRetry), Cause: err}
}

func (w *warmingDispatcher) isKnown(model string) bool {
	for _, m := range w.known() {
		if m == model {
			return true
		}
	}
	return false
}

// CheckCapabilities passes the check to the wrapped dispatcher when it
// has one (see CapabilityChecker).
func (w *warmingDispatcher) CheckCapabilities(t *task.Task) error {
	if cc, ok := w.Dispatcher.(CapabilityChecker); ok {
		return cc.CheckCapabilities(t)
	}
	return nil
}
