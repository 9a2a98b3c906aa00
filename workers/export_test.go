package workers

// FlushRecords waits until a's record store has applied, and aged out
// by, every record it acknowledged (the applier runs off the hot path).
func FlushRecords(a *Agent) error { return a.produced.flush() }
