// Package workerlink is the outbound worker link: a worker behind NAT dials
// the gateway's worker-link port (TLS, optionally mutual), and one
// multiplexed session then carries traffic both ways. Streams the worker
// opens carry its ordinary HTTP calls to the gateway (registration,
// heartbeats); streams the gateway opens carry batches to the worker, whose
// workers.NewHandler serves them unchanged. The gateway records such a
// worker's link as link://<session-id> instead of an address it could not
// dial.
//
// The session is hashicorp/yamux rather than HTTP/2 with reversed roles:
//
//   - a yamux session is a net.Listener and its streams are net.Conns, so
//     the existing HTTP/1.1 link code (internal/h1 on the gateway, net/http
//     and the fasthttp server) runs over streams without a line changed,
//     where reversed HTTP/2 would need a second client and server stack;
//   - each stream has its own flow-control window (bounded here by
//     Limits.MaxStreamWindow), so one slow batch cannot stall the others;
//   - closing a stream is the cancellation of one batch, exactly as closing
//     a TCP connection is on the inbound link;
//   - keepalive pings detect a link that died silently (a NAT that dropped
//     its mapping) within seconds, and the worker then redials.
//
// Every per-worker resource on the gateway is bounded: handshakes have a
// deadline, sessions are capped (Limits.MaxSessions), and those no worker
// has registered on yet (which without mutual TLS need no credentials) are
// capped apart, overall and per remote host (Limits.MaxPending,
// MaxPendingPerHost), and closed after Limits.RegisterTimeout unless the
// gateway marks them registered (Stream.MarkRegistered); a session whose
// workers all registered again elsewhere is closed; a session's unaccepted
// streams by yamux's accept backlog and all the streams the worker opened by
// Limits.MaxStreamsPerSession (a worker over it loses its session), each
// stream's buffered data by its window, its unanswered pings (yamux answers
// each on a goroutine) by maxUnansweredPings, and a peer that stops reading
// by the session's write timeout and keepalive. The session's connection is
// followed frame by frame (linkGuard) to count streams and pings.
package workerlink
