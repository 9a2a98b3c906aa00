package scheduler

// contextSlack allows for the prompt estimate (about four bytes a token
// when the gateway has no count) undercounting: a prompt estimated at
// half a model's context or more may not fit it.
const contextSlack = 2

// mayExceedContext reports whether the prompt may be longer than the
// model's context on every candidate whose context is known (and at least
// one is). Such a request is not shed for its deadline: a 429 would tell
// the client to retry something that can never succeed. It goes to a
// worker instead, whose engine counts the prompt exactly and answers 400
// context_length_exceeded before any prefill.
func mayExceedContext(req *Request, cands []*Candidate) bool {
	known := false
	for _, c := range cands {
		for _, m := range c.models {
			if m.Name != req.Task.Model || m.ContextLength <= 0 {
				continue
			}
			known = true
			if req.PromptTokens*contextSlack < m.ContextLength {
				return false
			}
		}
	}
	return known
}
