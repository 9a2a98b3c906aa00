package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

func reviewEvidence(comparator string) (*audit.Dispute, *receipts.Receipt) {
	const model, mdig, rq, text = "stories260K", "aa11", "bb22", "sha256:same-text"
	comp := func(worker string, ct int) task.Completion {
		return task.Completion{RequestID: "req-1", WorkerID: worker, Model: model, ModelDigest: mdig, RequestDigest: rq,
			ResponseDigest: text, PromptTokens: 5, CompletionTokens: ct, FinishReason: "length"}
	}
	d := &audit.Dispute{ID: "dsp-1", WorkerID: "0xcheat", Provider: "p-c", ReceiptID: "rcpt_1", Model: model, ModelDigest: mdig,
		RequestDigest: rq, Comparator: comparator, Executions: []audit.Execution{
			{Role: "audited", WorkerID: "0xcheat", Provider: "p-c", Completion: comp("0xcheat", 90)},
			{Role: "auditor", WorkerID: "0xa", Provider: "p-a", Completion: comp("0xa", 24)},
			{Role: "referee", WorkerID: "0xb", Provider: "p-b", Completion: comp("0xb", 24)},
		}}
	r := &receipts.Receipt{ID: "rcpt_1", RequestID: "req-1", RequestDigest: rq, ResponseDigest: text, Model: model,
		ModelDigest: mdig, WorkerID: "0xcheat", PromptTokens: 5, CompletionTokens: 90, Audit: "failed"}
	return d, r
}

// Regression test from the review of the dispute change; the bug it caught: audit.Prefix disputes a worker whose text equals the others' but
// whose completion token count is inflated beyond MaxTokenSkew (a billing
// cheat): same text → same response digest. checkDispute's prefix branch
// only compares digests, so this honest evidence is refused.
func TestReviewPrefixTokenInflationEvidenceRefused(t *testing.T) {
	d, r := reviewEvidence("prefix")
	// What the auditor really produces for that case:
	p := audit.Prefix{MinAgree: 64, MaxTokenSkew: 2}
	a := &audit.Output{Completion: d.Executions[0].Completion, Text: "once upon a time", HasText: true}
	b := &audit.Output{Completion: d.Executions[1].Completion, Text: "once upon a time", HasText: true}
	if v := p.Compare(a, b); v.Match {
		t.Fatalf("precondition: prefix comparator matched an inflated token count: %+v", v)
	}
	if err := checkDispute(d, r); err != nil {
		t.Errorf("honest token-inflation dispute (prefix comparator) refused: %v", err)
	}
}

// Regression test from the review of the dispute change; the bug it caught: the receipt's audit state is not cross-checked: the gateway told
// the customer "audit=passed" for this receipt, yet the dispute claims the
// receipt's worker cheated on it. Contradictory statements are accepted.
func TestReviewReceiptAuditStateNotChecked(t *testing.T) {
	d, r := reviewEvidence("exact")
	d.Executions[0].Completion.ResponseDigest, r.ResponseDigest = "sha256:cheat", "sha256:cheat"
	d.Executions[0].Completion.CompletionTokens = 24
	r.CompletionTokens = 24
	if err := checkDispute(d, r); err != nil {
		t.Fatalf("precondition: consistent evidence refused: %v", err)
	}
	r.Audit = "passed"
	if err := checkDispute(d, r); err == nil {
		t.Errorf("dispute against the audited worker accepted with the receipt marked audit=passed")
	}
}

// Regression test from the review of the dispute change; the bug it caught: GET /v1/admin/disputes during a Redis outage serves
// {"object":"list","data":[...],"partial":true}; readDisputes' strict page
// type has no "partial" field, so the listing is refused as a whole.
func TestReviewReadDisputesPartialListing(t *testing.T) {
	one := `{"id":"dsp-1","time":"2026-12-03T08:00:00Z","worker_id":"0xc","receipt_id":"rcpt_1","model":"m","model_digest":"d","request_digest":"r","comparator":"exact","detail":"x","divergence":-1,"executions":[]}`
	f := filepath.Join(t.TempDir(), "d.json")
	if err := os.WriteFile(f, []byte(`{"data":[`+one+`],"object":"list","partial":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if ds, err := readDisputes(f); err != nil || len(ds) != 1 {
		t.Errorf("partial listing: %d disputes, err %v", len(ds), err)
	}
}
