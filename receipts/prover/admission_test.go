package prover

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
)

// testOperator signs the test ledgers' registry root histories.
var testOperator = func() *receipts.OperatorKey {
	k, err := receipts.GenerateOperatorKey(bytes.NewReader(bytes.Repeat([]byte{42}, 32)))
	if err != nil {
		panic(err)
	}
	return k
}()

// TestProvenAgainstRootInForce: a batch is proven against the registry
// root in force at its batch time (per the operator's signed history,
// checked offline with Trust), and a batch of a worker revoked before the
// batch was cut fails instead of being proven.
func TestProvenAgainstRootInForce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.record("a", 2, true)
	e.clock.Advance(time.Second)
	p := e.pipeline(nil)
	if n, err := p.Step(ctx); err != nil || n != 2 {
		t.Fatalf("proved %d: %v", n, err)
	}
	// Another admission changes the root after the batch: the receipt still
	// verifies against the root in force at its batch time.
	e.clock.Advance(time.Second)
	other := receipts.ElementHex(receipts.HashElements(receipts.ModelVersionCommitment("another worker", [32]byte{})))
	if err := e.ledger.AdmitWorker(ctx, other, model); err != nil {
		t.Fatal(err)
	}
	h, err := e.ledger.RootHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := h.Verify(testOperator.Public())
	if err != nil {
		t.Fatal(err)
	}
	r := strictReceipt(t, e, "rcpt_a-0")
	vk := e.verifyingKey(r.Batch.VerifyingKeyID)
	trust := &receipts.Trust{Keys: map[string]*receipts.VerifyingKey{vk.ID: vk}, Roots: roots, AllowDevKeys: true}
	if err := trust.Verify(r); err != nil {
		t.Fatalf("receipt proven under the earlier root: %v", err)
	}
	if r.Batch.Public.RegistryRoot == h.Entries[len(h.Entries)-1].Root {
		t.Fatal("batch was proven against the later root")
	}

	// Revoked: the next batch, cut after the revocation, is never proven; it
	// waits (with backoff) and says why on the receipt.
	e.clock.Advance(time.Second)
	if _, err := e.ledger.Revoke(ctx, e.wid, "", ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	e.record("b", 1, true)
	e.clock.Advance(time.Second)
	if n, _ := p.Step(ctx); n != 0 {
		t.Fatalf("proved %d receipts of a revoked worker", n)
	}
	if got := strictReceipt(t, e, "rcpt_b-0"); got.Status != receipts.StatusPending || !strings.Contains(got.PendingReason, "not admitted") {
		t.Fatalf("status %s (%q), want pending, not admitted", got.Status, got.PendingReason)
	}
	// The receipt proven before the revocation still verifies.
	h, _ = e.ledger.RootHistory(ctx)
	roots, _ = h.Verify(testOperator.Public())
	trust.Roots = roots
	if err := trust.Verify(strictReceipt(t, e, "rcpt_a-0")); err != nil {
		t.Fatalf("receipt proven before the revocation: %v", err)
	}
	if !errors.Is(trust.Verify(strictReceipt(t, e, "rcpt_b-0")), receipts.ErrNotProven) {
		t.Error("failed receipt verified")
	}
}

// strictReceipt reads a receipt as a billing system would: the ledger's
// JSON through the strict parser.
func strictReceipt(t *testing.T, e *env, id string) *receipts.Receipt {
	t.Helper()
	raw, err := e.ledger.Receipt(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := receipts.ParseReceipt(raw)
	if err != nil {
		t.Fatalf("the ledger's receipt JSON is not canonical: %v\n%s", err, raw)
	}
	return r
}
