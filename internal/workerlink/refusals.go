package workerlink

import (
	"log/slog"
	"sync"
	"time"
)

// refusalEvery is how often one kind of refused connection is logged.
const refusalEvery = time.Second

// refusalLog logs the connections the server refuses or closes for abuse
// at most once per refusalEvery for each message, with how many it left
// out since: a peer that opens connections in a loop (garbage instead of a
// handshake, over a cap, a ping or stream flood) must not fill the
// gateway's log at the rate it connects.
type refusalLog struct {
	log *slog.Logger

	mu   sync.Mutex
	last map[string]refusalState // by message: a fixed, small set
}

type refusalState struct {
	at         time.Time
	suppressed int
}

func (r *refusalLog) Warn(msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if r.last == nil {
		r.last = map[string]refusalState{}
	}
	st := r.last[msg]
	if !st.at.IsZero() && now.Sub(st.at) < refusalEvery {
		st.suppressed++
		r.last[msg] = st
		r.mu.Unlock()
		return
	}
	r.last[msg] = refusalState{at: now}
	r.mu.Unlock()
	if st.suppressed > 0 {
		args = append(args, "suppressed", st.suppressed)
	}
	r.log.Warn(msg, args...)
}
