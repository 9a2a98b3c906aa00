package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// TestCheckDispute plays whoever forges dispute evidence: a gateway framing
// an honest worker (evidence about another request, model or receipt, an
// auditor and referee of one provider, executions that do not disagree),
// or one that edits the audited worker's claim. Each forgery is refused;
// the honest evidence passes, for both comparators and both sides.
func TestCheckDispute(t *testing.T) {
	const (
		model, mdig, rq = "stories260K", "aa11", "bb22"
		cheat, honest   = "sha256:cheat", "sha256:honest"
	)
	comp := func(worker, resp string, ct int) task.Completion {
		return task.Completion{RequestID: "req-1", WorkerID: worker, Model: model, ModelDigest: mdig, RequestDigest: rq,
			ResponseDigest: resp, PromptTokens: 5, CompletionTokens: ct, FinishReason: "length"}
	}
	good := func() (*audit.Dispute, *receipts.Receipt) {
		d := &audit.Dispute{ID: "dsp-1", WorkerID: "0xcheat", Provider: "p-c", ReceiptID: "rcpt_1", Model: model, ModelDigest: mdig,
			RequestDigest: rq, Comparator: "exact", Executions: []audit.Execution{
				{Role: "audited", WorkerID: "0xcheat", Provider: "p-c", Completion: comp("0xcheat", cheat, 24)},
				{Role: "auditor", WorkerID: "0xa", Provider: "p-a", Completion: comp("0xa", honest, 24)},
				{Role: "referee", WorkerID: "0xb", Provider: "p-b", Completion: comp("0xb", honest, 24)},
			}}
		r := &receipts.Receipt{ID: "rcpt_1", RequestID: "req-1", RequestDigest: rq, ResponseDigest: cheat, Model: model,
			ModelDigest: mdig, WorkerID: "0xcheat", PromptTokens: 5, CompletionTokens: 24}
		return d, r
	}
	cases := []struct {
		name  string
		edit  func(d *audit.Dispute, r *receipts.Receipt)
		wants string // "" = accepted
	}{
		{"honest evidence", func(*audit.Dispute, *receipts.Receipt) {}, ""},
		{"prefix comparator", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Comparator = "prefix"
			d.Executions[2].Completion.ResponseDigest = "sha256:honest-ish"
		}, ""},
		{"auditor disputed (the cheat audited an honest answer)", func(d *audit.Dispute, r *receipts.Receipt) {
			d.Executions[0], d.Executions[1] = audit.Execution{Role: "audited", WorkerID: "0xa", Provider: "p-a", Completion: comp("0xa", honest, 24)},
				audit.Execution{Role: "auditor", WorkerID: "0xcheat", Provider: "p-c", Completion: comp("0xcheat", cheat, 24)}
			r.WorkerID, r.ResponseDigest = "0xa", honest
		}, ""},
		{"another receipt", func(_ *audit.Dispute, r *receipts.Receipt) { r.ID = "rcpt_2" }, "names receipt"},
		{"another request", func(d *audit.Dispute, _ *receipts.Receipt) { d.RequestDigest = "cc33" }, "request digest"},
		{"another model version", func(d *audit.Dispute, _ *receipts.Receipt) { d.ModelDigest = "ff" }, "model version"},
		{"referee ran another request", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[2].Completion.RequestDigest = "cc33" }, "another request"},
		{"audited claim edited", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[0].Completion.ResponseDigest = "sha256:x" }, "response digest"},
		{"audited tokens edited", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[0].Completion.CompletionTokens = 99 }, "tokens"},
		{"audited worker swapped", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Executions[0].WorkerID, d.Executions[0].Completion.WorkerID = "0xz", "0xz"
		}, "receipt worker"},
		{"auditor and referee one provider", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[2].Provider = "p-a" }, "also ran"},
		{"one worker twice", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Executions[2].WorkerID, d.Executions[2].Completion.WorkerID, d.Executions[2].Provider = "0xa", "0xa", "p-z"
		}, "also ran"},
		{"record of another worker", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[1].Completion.WorkerID = "0xq" }, "record of worker"},
		{"two executions only", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions = d.Executions[:2] }, "2 executions"},
		{"role twice", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[2].Role = "auditor" }, "twice"},
		{"unknown role", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[2].Role = "judge" }, "unknown role"},
		{"others disagree", func(d *audit.Dispute, _ *receipts.Receipt) { d.Executions[2].Completion.ResponseDigest = "sha256:y" }, "do not agree"},
		{"no disagreement", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Executions[1].Completion.ResponseDigest, d.Executions[2].Completion.ResponseDigest = cheat, cheat
		}, "agrees with the others"},
		{"prefix with an equal digest", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Comparator = "prefix"
			d.Executions[2].Completion.ResponseDigest = cheat
		}, "equals another"},
		{"referee disputed", func(d *audit.Dispute, _ *receipts.Receipt) { d.WorkerID, d.Provider = "0xb", "p-b" }, "neither the audited nor the auditor"},
		{"provider mislabelled", func(d *audit.Dispute, _ *receipts.Receipt) { d.Provider = "p-a" }, "disputed provider"},
		{"cancelled execution", func(d *audit.Dispute, _ *receipts.Receipt) {
			d.Executions[1].Completion.FinishReason = task.FinishCancelled
		}, "ended early"},
		{"unknown comparator", func(d *audit.Dispute, _ *receipts.Receipt) { d.Comparator = "vibes" }, "unknown comparator"},
		{"negative tokens", func(d *audit.Dispute, r *receipts.Receipt) {
			d.Executions[0].Completion.PromptTokens = -1
		}, "tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, r := good()
			c.edit(d, r)
			err := checkDispute(d, r)
			switch {
			case c.wants == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.wants != "" && (err == nil || !strings.Contains(err.Error(), c.wants)):
				t.Fatalf("got %v, want an error with %q", err, c.wants)
			}
		})
	}
}

// TestReadDisputes: the admin listing and a single dispute are read; a
// key twice, a key in another case, an empty list and junk are refused.
func TestReadDisputes(t *testing.T) {
	one := `{"id":"dsp-1","time":"2026-12-03T08:00:00Z","worker_id":"0xc","receipt_id":"rcpt_1","model":"m","model_digest":"d","request_digest":"r","comparator":"exact","detail":"x","divergence":-1,"executions":[]}`
	cases := []struct {
		in   string
		n    int
		fail bool
	}{
		{one, 1, false},
		{`{"object":"list","data":[` + one + `,` + one + `]}`, 2, false},
		{`{"object":"list","data":[]}`, 0, true},
		{strings.Replace(one, `"worker_id":"0xc"`, `"worker_id":"0xc","worker_id":"0xd"`, 1), 0, true},
		{strings.Replace(one, `"worker_id"`, `"Worker_ID"`, 1), 0, true},
		{`[1,2]`, 0, true},
	}
	for i, c := range cases {
		f := filepath.Join(t.TempDir(), "d.json")
		if err := os.WriteFile(f, []byte(c.in), 0o600); err != nil {
			t.Fatal(err)
		}
		ds, err := readDisputes(f)
		if (err != nil) != c.fail || len(ds) != c.n {
			t.Errorf("case %d: %d disputes, err %v", i, len(ds), err)
		}
	}
}
