package scheduler

import "github.com/tollgate-ai/tollgate/batching"

// statsState is guarded by the scheduler's lock.
type statsState struct {
	stepNames  []string
	steps      []batching.Histogram // per filter, per scorer, then the picker; seconds
	refused    []uint64             // per filter: cycles it left empty
	decisions  batching.Histogram   // whole cycle, seconds
	candidates batching.Histogram   // candidates after filtering
	queueWait  batching.Histogram   // seconds in a batcher queue
	batchSize  batching.Histogram   // tasks per frame

	cycles, placed, shed, expired, retries, ejections uint64
	recordsRefused                                    uint64
}

func (st *statsState) init(filters []Filter, scorers []Scorer) {
	for _, f := range filters {
		st.stepNames = append(st.stepNames, "filter/"+f.Name())
	}
	for _, s := range scorers {
		st.stepNames = append(st.stepNames, "scorer/"+s.Name())
	}
	st.stepNames = append(st.stepNames, "picker")
	st.steps = make([]batching.Histogram, len(st.stepNames))
	st.refused = make([]uint64, len(filters))
}

// Stats is a snapshot of the scheduler's metrics, ready to export. Latencies
// and waits are in seconds.
type Stats struct {
	// Placed counts tasks handed to a worker (retries included); Shed the
	// admissions refused with 429; Expired the deadlines passed before the
	// first token; Retries the second attempts; Ejections the workers taken
	// out after a failure.
	Placed    uint64 `json:"placed"`
	Shed      uint64 `json:"shed"`
	Expired   uint64 `json:"expired"`
	Retries   uint64 `json:"retries"`
	Ejections uint64 `json:"ejections"`
	// RecordsRefused counts the completion records that failed the
	// gateway's checks (each ejected its worker).
	RecordsRefused uint64 `json:"records_refused"`
	// Refused counts, per filter, the cycles that filter left without a candidate.
	Refused map[string]uint64 `json:"refused"`

	// DecisionLatency and StepLatency sample one cycle in 16.
	DecisionLatency batching.Summary            `json:"decision_latency_seconds"`
	StepLatency     map[string]batching.Summary `json:"step_latency_seconds"`
	Candidates      batching.Summary            `json:"candidates"`
	QueueWait       batching.Summary            `json:"queue_wait_seconds"`
	BatchSize       batching.Summary            `json:"batch_size"`
	// QueueLength is the tasks waiting in all batchers now.
	QueueLength int `json:"queue_length"`
	// InFlight is the tasks placed and not ended now (queued included).
	InFlight int `json:"in_flight"`
}

// Stats snapshots the scheduler's metrics.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	out := Stats{
		Placed: st.placed, Shed: st.shed, Expired: st.expired, Retries: st.retries, Ejections: st.ejections,
		RecordsRefused:  st.recordsRefused,
		Refused:         map[string]uint64{},
		DecisionLatency: st.decisions.Summary(),
		StepLatency:     map[string]batching.Summary{},
		Candidates:      st.candidates.Summary(),
		QueueWait:       st.queueWait.Summary(),
		BatchSize:       st.batchSize.Summary(),
	}
	for i, f := range s.filters {
		out.Refused[f.Name()] = st.refused[i]
	}
	for i, n := range st.stepNames {
		out.StepLatency[n] = st.steps[i].Summary()
	}
	for _, c := range s.order {
		out.QueueLength += c.queued()
		out.InFlight += c.assigned
	}
	return out
}
