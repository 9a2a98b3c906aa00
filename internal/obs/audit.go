package obs

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Audit metric names.
const (
	MetricAudits        = "tollgate.audit.audits"   // counter by outcome
	MetricAuditDisputes = "tollgate.audit.disputes" // counter
	MetricAuditShare    = "tollgate.audit.share"    // gauge: audit work / served work
)

// AuditCounts is the auditor's tally at collection time (totals since
// start).
type AuditCounts struct {
	Passed, Mismatched, Inconclusive, Errors int64
	Dropped, SkippedBudget, SkippedNoPeer    int64
	Disputes                                 int64
	Share                                    float64
}

type auditInstruments struct {
	fn atomic.Pointer[func() AuditCounts]
}

// auditMetrics registers the audit instruments and their callback.
func (m *Metrics) auditMetrics(meter metric.Meter) error {
	audits, err := meter.Int64ObservableCounter(MetricAudits, metric.WithUnit("{audit}"),
		metric.WithDescription("Spot re-executions by outcome (passed, mismatched, inconclusive, error) and samples not audited (dropped, skipped_budget, skipped_no_peer)."))
	if err != nil {
		return err
	}
	disputes, err := meter.Int64ObservableCounter(MetricAuditDisputes, metric.WithUnit("{dispute}"),
		metric.WithDescription("Workers disputed by an audit (taken out of rotation)."))
	if err != nil {
		return err
	}
	share, err := meter.Float64ObservableGauge(MetricAuditShare, metric.WithUnit("1"),
		metric.WithDescription("Audit work over served work, in tokens."))
	if err != nil {
		return err
	}
	outcome := func(v string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", v)))
	}
	passed, mismatched, inconclusive, errored := outcome("passed"), outcome("mismatched"), outcome("inconclusive"), outcome("error")
	dropped, budget, nopeer := outcome("dropped"), outcome("skipped_budget"), outcome("skipped_no_peer")
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		f := m.audit.fn.Load()
		if f == nil {
			return nil
		}
		c := (*f)()
		o.ObserveInt64(audits, c.Passed, passed)
		o.ObserveInt64(audits, c.Mismatched, mismatched)
		o.ObserveInt64(audits, c.Inconclusive, inconclusive)
		o.ObserveInt64(audits, c.Errors, errored)
		o.ObserveInt64(audits, c.Dropped, dropped)
		o.ObserveInt64(audits, c.SkippedBudget, budget)
		o.ObserveInt64(audits, c.SkippedNoPeer, nopeer)
		o.ObserveInt64(disputes, c.Disputes)
		o.ObserveFloat64(share, c.Share)
		return nil
	}, audits, disputes, share)
	return err
}

// ObserveAudit installs the auditor's tally callback (read at scrape time;
// it must be fast).
func (m *Metrics) ObserveAudit(f func() AuditCounts) {
	if m != nil {
		m.audit.fn.Store(&f)
	}
}
