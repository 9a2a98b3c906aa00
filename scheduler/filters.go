package scheduler

import (
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// ModelFilter keeps workers serving the task's model by name and, when the
// model is pinned, by weights digest too; embedding tasks also need a
// version that serves embeddings.
type ModelFilter struct {
	Pins map[string]string // model name → weights digest
}

var _ Filter = (*ModelFilter)(nil)

func (*ModelFilter) Name() string { return "model" }

func (f *ModelFilter) Filter(req *Request, cands []*Candidate) []*Candidate {
	name := req.Task.Model
	pin := f.Pins[name]
	embed := req.Task.Kind == task.KindEmbedding
	out := cands[:0]
	for _, c := range cands {
		for _, m := range c.models {
			if m.Name == name && (pin == "" || m.Digest == pin) && (!embed || m.Embeddings) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// HealthFilter keeps workers that heartbeat within Timeout, are not
// draining, disputed or ejected after a failure, are not Request.Exclude
// and are Request.Only when that is set.
type HealthFilter struct {
	Timeout time.Duration
}

var _ Filter = (*HealthFilter)(nil)

func (*HealthFilter) Name() string { return "health" }

func (f *HealthFilter) Filter(req *Request, cands []*Candidate) []*Candidate {
	out := cands[:0]
	for _, c := range cands {
		if c.healthy(req.nowNs, f.Timeout) && c.id != req.Exclude && (req.Only == "" || c.id == req.Only) {
			out = append(out, c)
		}
	}
	return out
}

// CapacityFilter keeps workers whose batcher can still take the task: tasks
// assigned below slots plus the queue bound.
type CapacityFilter struct {
	MaxQueue int
}

var _ Filter = (*CapacityFilter)(nil)

func (*CapacityFilter) Name() string { return "capacity" }

func (f *CapacityFilter) Filter(_ *Request, cands []*Candidate) []*Candidate {
	out := cands[:0]
	for _, c := range cands {
		if c.assigned < c.slots+f.MaxQueue {
			out = append(out, c)
		}
	}
	return out
}
