package main

import (
	"context"
	"sync"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/gateway"
	"github.com/tollgate-ai/tollgate/internal/cluster"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/statuspage"
	"github.com/tollgate-ai/tollgate/scheduler"
)

// startAuditor starts the auditor when the config enables it and wires it
// into the gateway's deps: completions in, disputes out, audit states onto
// the ledger's receipts.
func (g *gatewayStack) startAuditor(deps *gateway.Deps) error {
	c := g.cfg.Audit
	if !c.Enabled {
		return nil
	}
	ad := audit.Deps{Pool: g.sched, Logger: g.logger}
	if g.ledger != nil {
		ad.Marker = g.ledger
	}
	if g.redis != nil {
		// Cluster mode: a dispute takes the worker out on every replica,
		// and every replica lists every replica's disputes.
		ad.Pool = clusterPool{g.sched, g.redis.registry}
		ad.Log = &audit.RedisLog{Client: g.redis.client, Key: g.cfg.Redis.Prefix + "disputes", Logger: g.logger}
	}
	a, err := audit.New(audit.Config{Rate: c.Rate, MaxShare: c.MaxShare, Queue: c.Queue,
		Concurrency: c.Concurrency, Timeout: c.Timeout.D()}, ad)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = a.Run(ctx)
	}()
	g.auditor, g.stopAuditor = a, func() { cancel(); wg.Wait() }
	deps.Auditor = a
	deps.Disputes = func(ctx context.Context) (any, error) { return a.ListDisputes(ctx) }
	deps.AuditStatus = func() statuspage.Audit {
		s := a.Stats()
		return statuspage.Audit{Audited: s.Audited, Passed: s.Passed, Disputes: s.Disputes, Dropped: s.Dropped, Share: s.Share()}
	}
	g.obs.Metrics().ObserveAudit(func() obs.AuditCounts {
		s := a.Stats()
		return obs.AuditCounts{Passed: int64(s.Passed), Mismatched: int64(s.Mismatched), Inconclusive: int64(s.Inconclusive),
			Errors: int64(s.Errors), Dropped: int64(s.Dropped), SkippedBudget: int64(s.SkippedBudget),
			SkippedNoPeer: int64(s.SkippedNoPeer), Disputes: int64(s.Disputes), Share: s.Share()}
	})
	g.logger.Info("auditor started", "rate", c.Rate, "max_share", c.MaxShare)
	return nil
}

// clusterPool is the scheduler as the auditor's pool, with disputes
// shared through the cluster registry.
type clusterPool struct {
	*scheduler.Scheduler
	registry *cluster.Registry
}

func (p clusterPool) Dispute(workerID, reason string) { p.registry.Dispute(workerID, reason) }
