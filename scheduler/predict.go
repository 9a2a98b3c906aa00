package scheduler

// loadSlowdown is how much slower a worker runs each step when all its
// slots are busy than when it runs one task: continuous-batching engines
// (vLLM, SGLang) take about twice as long per step at full batch. The
// predictor scales by 1 + loadSlowdown × assigned/slots, and normalises each
// observation by the same factor at send time, so what it learns is the
// worker's unloaded speed.
const loadSlowdown = 1.0

func loadFactor(assigned, slots int) float64 {
	return 1 + loadSlowdown*min(float64(assigned)/float64(slots), 1)
}

// predictTTFT is the predicted time to first token, in seconds, of a task
// with promptTokens placed on c now:
//
//	wait    = (queued + 1) / slots × remaining tokens per assigned task × ITL × (1 + loadSlowdown)   when every slot is busy, else 0
//	prefill = (overhead + perToken × promptTokens) × loadFactor(assigned + 1)
//
// assigned and the remaining tokens are tracked by the scheduler itself as
// it places tasks and events come back, so a burst between two heartbeats
// already sees the tasks placed before it.
func predictTTFT(c *Candidate, promptTokens int) float64 {
	wait := 0.0
	if c.assigned >= c.slots {
		perTask := float64(c.assignedTokens) / float64(c.assigned)
		wait = float64(c.queued()+1) / float64(c.slots) * perTask * c.latency.interToken * (1 + loadSlowdown)
	}
	return wait + c.latency.prefill(promptTokens)*loadFactor(c.assigned+1, c.slots)
}
