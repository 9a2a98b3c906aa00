package task

import "testing"

// Several choices share one record: its completion tokens are the sum over
// the choices, so each bound (max_tokens, and the tokens the relayed bytes
// can hold) is per choice. A bound for one choice refused an honest n = 2
// record and ejected its worker.
func TestMaxCompletionTokensPerChoice(t *testing.T) {
	b := UsageBounds{}.WithDefaults()
	one := b.MaxCompletionTokens(&Task{Kind: KindChat, MaxTokens: 3}, 1000)
	for _, tc := range []struct {
		name string
		task Task
		want int
	}{
		{"one choice, max_tokens", Task{Kind: KindChat, MaxTokens: 3}, 3},
		{"two choices, max_tokens", Task{Kind: KindChat, MaxTokens: 3, N: 2}, 6},
		{"eight choices, max_tokens", Task{Kind: KindChat, MaxTokens: 5, N: 8}, 40},
	} {
		if got := b.MaxCompletionTokens(&tc.task, 1000); got != tc.want {
			t.Errorf("%s: MaxCompletionTokens = %d, want %d", tc.name, got, tc.want)
		}
	}
	if one != 3 {
		t.Fatalf("one choice: %d", one)
	}
	// Without max_tokens the byte bound grows by the per-choice slack and
	// stop length, never by more than that: a worker cannot claim more
	// tokens for two choices than their bytes and slack allow.
	stop := []string{"STOPSTOP"}
	b1 := b.MaxCompletionTokens(&Task{Kind: KindChat, Stop: stop}, 100)
	b2 := b.MaxCompletionTokens(&Task{Kind: KindChat, Stop: stop, N: 2}, 100)
	if b2 <= b1 || b2 > b1+b.CompletionSlack+int(b.CompletionPerByte*8)+1 {
		t.Fatalf("byte bound one choice %d, two choices %d: want one more slack and stop", b1, b2)
	}
}
