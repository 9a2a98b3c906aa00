package scheduler

import (
	"context"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Peer is a registered worker as the auditor sees it when it picks who
// re-executes a request.
type Peer struct {
	ID string
	// Provider is who runs it (task.Registered.Provider; the worker ID
	// when the registration names none, so an unnamed worker is its own
	// provider).
	Provider string
	// Determinism is what the worker declared for the model version.
	Determinism string
	// InRotation: healthy, not draining, ejected or disputed.
	InRotation bool
}

// Peers lists the workers registered with model version (name, digest), in
// registration order, in rotation or not.
func (s *Scheduler) Peers(name, digest string) []Peer {
	now := monoNanos(s.clock.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Peer
	for _, c := range s.order {
		for _, m := range c.models {
			if m.Name != name || m.Digest != digest {
				continue
			}
			p := Peer{ID: c.id, Provider: c.reg.Provider, Determinism: m.Determinism,
				InRotation: c.healthy(now, s.cfg.HeartbeatTimeout)}
			if p.Provider == "" {
				p.Provider = c.id
			}
			out = append(out, p)
			break
		}
	}
	return out
}

// DispatchTo is Dispatch on one given worker and no other: no retry
// elsewhere, 503 when that worker is out of rotation. The auditor uses it
// to re-execute a request on a worker it chose; the task goes through the
// worker's batcher like any other, so the worker cannot tell it apart.
func (s *Scheduler) DispatchTo(ctx context.Context, workerID string, t *task.Task, onEvent func(task.Event) error) error {
	return s.dispatch(ctx, workerID, t, onEvent)
}

// Dispute takes a worker out of rotation because an audit caught it
// serving something other than what it signed for. Unlike an ejection it
// does not expire, and it survives the worker registering again (the
// worker ID is its key's); tasks already placed on it finish there.
// reason is shown in the admin listing.
func (s *Scheduler) Dispute(workerID, reason string) {
	if reason == "" {
		reason = "disputed"
	}
	s.mu.Lock()
	if s.disputed == nil {
		s.disputed = map[string]string{}
	}
	s.disputed[workerID] = reason
	if c, ok := s.workers[workerID]; ok {
		c.disputed = true
	}
	s.mu.Unlock()
	s.logger.Warn("worker disputed", "worker", workerID, "reason", reason)
}

// ClearDispute puts a disputed worker back in rotation (an operator's
// decision after reading the evidence).
func (s *Scheduler) ClearDispute(workerID string) {
	s.mu.Lock()
	delete(s.disputed, workerID)
	if c, ok := s.workers[workerID]; ok {
		c.disputed = false
	}
	s.mu.Unlock()
}
