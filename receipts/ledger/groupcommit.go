package ledger

import (
	"context"
	"errors"
)

// Both stores group-commit: Append queues its entries and waits; one
// committer goroutine takes everything queued at that moment (up to
// maxGroup requests) and writes it in one transaction — one fsync for
// bbolt, one script call for Redis. An idle store adds no wait: a lone
// append is committed as soon as it arrives.

type appendReq struct {
	entries []*Entry
	done    chan error
}

var errClosed = errors.New("ledger: store closed")

// maxGroup bounds how many appends share one transaction.
const maxGroup = 1024

// enqueueAppend queues entries for the committer and waits for the outcome.
// Once queued the append completes within one commit; the caller waits for
// it so it never mistakes a durable receipt for a lost one.
func enqueueAppend(ctx context.Context, appends chan<- *appendReq, quit, closed <-chan struct{}, entries []*Entry) error {
	req := &appendReq{entries: entries, done: make(chan error, 1)}
	select {
	case appends <- req:
	case <-quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-closed:
		select {
		case err := <-req.done:
			return err
		default:
			return errClosed
		}
	}
}

// runGroupCommit is the committer loop: it hands each group of queued
// appends to commit until quit is closed.
func runGroupCommit(appends <-chan *appendReq, quit <-chan struct{}, commit func([]*appendReq)) {
	for {
		var group []*appendReq
		select {
		case r := <-appends:
			group = append(group, r)
		case <-quit:
			return
		}
	gather:
		for len(group) < maxGroup {
			select {
			case r := <-appends:
				group = append(group, r)
			default:
				break gather
			}
		}
		commit(group)
	}
}

// failQueued fails, with errClosed, every append still queued once a
// store's committer has stopped.
func failQueued(appends <-chan *appendReq) {
	for {
		select {
		case r := <-appends:
			r.done <- errClosed
		default:
			return
		}
	}
}
