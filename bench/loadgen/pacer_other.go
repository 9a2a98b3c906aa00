//go:build !linux

package loadgen

import (
	"context"
	"time"
)

// pacer sleeps until each send time with Go's timers (to the millisecond
// or so while the process idles; see the Linux pacer).
type pacer struct{ t *time.Timer }

func newPacer() *pacer { return &pacer{t: time.NewTimer(time.Hour)} }

func (p *pacer) stop() { p.t.Stop() }

func (p *pacer) sleepUntil(ctx context.Context, due time.Time) bool {
	d := time.Until(due)
	if d <= 0 {
		return ctx.Err() == nil
	}
	p.t.Reset(d)
	select {
	case <-p.t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
