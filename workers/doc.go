// Package workers owns everything on the worker side of Tollgate: the worker
// agent that runs batches on an engine, the gateway↔worker transport,
// registration and heartbeats, GPU telemetry, and the engines themselves
// (workers/engine/...). The contract it shares with the gateway, scheduler
// and batcher (tasks, batches, events, engines and telemetry) lives in
// internal/task.
package workers
