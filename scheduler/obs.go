package scheduler

import (
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// queueCounts feeds the queue-length and in-flight gauges at scrape time.
func (s *Scheduler) queueCounts() obs.QueueCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	var q obs.QueueCounts
	for _, c := range s.order {
		q.Queued += c.queued()
		q.InFlight += c.assigned
	}
	return q
}

// workerCounts feeds the worker-health gauge at scrape time: healthy is
// what the health filter lets through (fresh heartbeat, not draining, not
// ejected).
func (s *Scheduler) workerCounts() obs.WorkerCounts {
	now := monoNanos(s.clock.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	var w obs.WorkerCounts
	for _, c := range s.order {
		if c.healthy(now, s.cfg.HeartbeatTimeout) {
			w.Healthy++
		} else {
			w.Unhealthy++
		}
	}
	return w
}

// operation is the GenAI operation name (gen_ai.operation.name) of a task kind.
func operation(k task.Kind) string {
	switch k {
	case task.KindChat:
		return obs.OpChat
	case task.KindEmbedding:
		return obs.OpEmbeddings
	}
	return obs.OpTextCompletion
}
