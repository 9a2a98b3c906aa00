package prover

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
)

// FuzzVerifyRealKey: receipts.Verify against a real proof and the real
// capacity-8 dev verifying key. Seeded with a genuine proven receipt (made
// once, through the ledger and the prover as in production) and tamperings
// from TestProvenReceiptVerifiesAndTamperingFails. Whatever a billing
// system is handed, Verify never panics, and anything it accepts bills what
// the genuine receipt bills: same request, subject, model, time and tokens.
func FuzzVerifyRealKey(f *testing.F) {
	e := newEnv(f)
	ids := e.record("f", 3, true)
	p := e.pipeline(nil)
	e.clock.Advance(time.Second)
	if n, err := p.Step(context.Background()); err != nil || n != 3 {
		f.Fatalf("proved %d, err %v", n, err)
	}
	reg, err := e.ledger.Registry(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	root := reg.Root()
	raw, err := e.ledger.Receipt(context.Background(), ids[1])
	if err != nil {
		f.Fatal(err)
	}
	var base receipts.Receipt
	if err := json.Unmarshal(raw, &base); err != nil {
		f.Fatal(err)
	}
	vk := e.verifyingKey(base.Batch.VerifyingKeyID)
	if err := receipts.Verify(&base, vk, root); err != nil {
		f.Fatalf("the genuine receipt does not verify: %v", err)
	}
	s := string(raw)
	f.Add(s)
	for _, tamper := range [][2]string{
		{`"prompt_tokens":8`, `"prompt_tokens":9`},
		{`"completion_tokens":31`, `"completion_tokens":310`},
		{`"subject":"key_1"`, `"subject":"key_2"`},
		{`"status":"proven"`, `"status":"pending"`},
		{`"leaf_count":3`, `"leaf_count":2`},
		{`"index":1`, `"index":0`},
	} {
		bad := strings.Replace(s, tamper[0], tamper[1], 1)
		if bad == s {
			f.Fatalf("tamper %q matches nothing in %s", tamper[0], s)
		}
		f.Add(bad)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var r receipts.Receipt
		if json.Unmarshal([]byte(s), &r) != nil {
			return
		}
		if err := receipts.Verify(&r, vk, root); err != nil {
			return
		}
		if r.RequestID != base.RequestID || r.Subject != base.Subject || r.Model != base.Model ||
			!r.Time.Equal(base.Time) || r.PromptTokens != base.PromptTokens || r.CompletionTokens != base.CompletionTokens ||
			r.Batch.Public.TotalPromptTokens != base.Batch.Public.TotalPromptTokens ||
			r.Batch.Public.TotalCompletionTokens != base.Batch.Public.TotalCompletionTokens {
			t.Fatalf("a receipt that bills differently verified:\n%s", s)
		}
	})
}
