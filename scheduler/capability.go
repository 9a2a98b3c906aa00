package scheduler

import (
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// CodeUnsupportedParameter is the 400 for a task that needs a capability
// (task.Task.Needs) no registered version of its model declares.
const CodeUnsupportedParameter = "unsupported_parameter"

// CapabilityFilter keeps workers whose version of the task's model
// declares every capability the task needs. A plain task needs none and
// passes every worker without a look at their models.
type CapabilityFilter struct{}

var _ Filter = (*CapabilityFilter)(nil)

func (*CapabilityFilter) Name() string { return "capability" }

func (*CapabilityFilter) Filter(req *Request, cands []*Candidate) []*Candidate {
	need := req.Task.Needs() // no allocation for a plain task
	if len(need) == 0 {
		return cands
	}
	out := cands[:0]
	for _, c := range cands {
		if m := c.model(req.Task.Model); m != nil && hasAll(m, need) {
			out = append(out, c)
		}
	}
	return out
}

// model is the worker's version of the named model, or nil.
func (c *Candidate) model(name string) *task.ModelVersion {
	for i := range c.models {
		if c.models[i].Name == name {
			return &c.models[i]
		}
	}
	return nil
}

func hasAll(m *task.ModelVersion, need []task.Capability) bool {
	for _, c := range need {
		if !m.Has(c) {
			return false
		}
	}
	return true
}

// CheckCapabilities refuses, before any routing, a task that needs a
// capability no registered worker's version of its model declares —
// healthy or not: a capable worker that is down is a 503 from the
// cycle, not a 400. A model no worker serves passes (the cycle answers
// 404 model_not_found).
func (s *Scheduler) CheckCapabilities(t *task.Task) error {
	need := t.Needs()
	if len(need) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	served := false
	var have []task.Capability // union over the workers serving the model
	for _, c := range s.order {
		m := c.model(t.Model)
		if m == nil {
			continue
		}
		if hasAll(m, need) {
			return nil
		}
		served = true
		have = append(have, m.Capabilities...)
	}
	if !served {
		return nil
	}
	for _, c := range need {
		found := false
		for _, h := range have {
			found = found || h == c
		}
		if !found {
			return UnsupportedCapability(t.Model, c)
		}
	}
	// Every capability is declared somewhere, never all by one worker.
	return apierr.BadRequest(capabilityParam(need[0]), CodeUnsupportedParameter,
		"Model '%s' does not support %s together on any one worker.", t.Model, task.CapabilityList(need))
}

// UnsupportedCapability is the 400 for model lacking capability c, naming
// the request parameter that asked for it.
func UnsupportedCapability(model string, c task.Capability) error {
	param := capabilityParam(c)
	return apierr.BadRequest(param, CodeUnsupportedParameter, "Model '%s' does not support '%s'.", model, capabilityWord(c))
}

func capabilityParam(c task.Capability) string {
	switch c {
	case task.CapTools:
		return "tools"
	case task.CapJSONObject, task.CapJSONSchema:
		return "response_format"
	case task.CapLogprobs:
		return "logprobs"
	case task.CapN:
		return "n"
	case task.CapDimensions:
		return "dimensions"
	}
	return "messages" // vision, audio: content parts
}

// capabilityWord names c as the client wrote it.
func capabilityWord(c task.Capability) string {
	switch c {
	case task.CapJSONObject:
		return "response_format json_object"
	case task.CapJSONSchema:
		return "response_format json_schema"
	case task.CapN:
		return "n > 1"
	case task.CapVision:
		return "image_url content"
	case task.CapAudio:
		return "input_audio content"
	}
	return string(c)
}
