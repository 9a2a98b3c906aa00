package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tollgate-ai/tollgate/audit"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// maxDisputeFile bounds a --dispute input (GET /v1/admin/disputes keeps
// at most audit.Config.MaxDisputes, 1,000 by default).
const maxDisputeFile = 64 << 20

// readDisputes reads a --dispute file: one dispute object, or the list
// GET /v1/admin/disputes serves ({"object":"list","data":[...]}). Both are
// parsed strictly (receipts.DecodeStrict): the evidence is checked against
// a proven receipt, so no key may be read twice or in another case.
func readDisputes(name string) ([]audit.Dispute, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDisputeFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDisputeFile {
		return nil, fmt.Errorf("more than %d bytes", maxDisputeFile)
	}
	b = bytes.TrimSpace(b)
	var page struct {
		Object  string            `json:"object"`
		Data    []json.RawMessage `json:"data"`
		Partial bool              `json:"partial,omitempty"` // listed during a shared-log outage
	}
	raws := []json.RawMessage{b}
	if receipts.DecodeStrict(b, &page) == nil && page.Object == "list" {
		raws = page.Data
	}
	out := make([]audit.Dispute, 0, len(raws))
	for i, raw := range raws {
		var d audit.Dispute
		if err := receipts.DecodeStrict(raw, &d); err != nil {
			return nil, fmt.Errorf("dispute %d: %w", i, err)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("no disputes in the input")
	}
	return out, nil
}

// checkDispute checks a dispute's evidence against the receipt it names,
// which the caller has verified (proof, worker signature, registry): the
// receipt is then the audited worker's own attributable claim, and the
// evidence must be about exactly that claim:
//
//   - the receipt is the dispute's (ID, model version, request digest), and
//     the "audited" execution is the receipt's (worker, response digest,
//     token counts);
//   - three executions, audited, auditor and referee, by three workers of
//     three providers, all of the same request and model version;
//   - the disputed worker is the audited or the auditor, and the two other
//     executions agree against it: equal response digests and token
//     counts for the exact comparator (engines that declare bit-exact
//     determinism); for the prefix comparator only that its response
//     digest differs from both (the texts compared are not evidence: they
//     hold the customer's output).
//
// It does not re-check the auditor's and referee's answers: they are the
// gateway's statement, as the receipt's audit field is.
func checkDispute(d *audit.Dispute, r *receipts.Receipt) error {
	switch {
	case d.ReceiptID != r.ID:
		return fmt.Errorf("names receipt %s, not %s", d.ReceiptID, r.ID)
	case d.Model != r.Model || d.ModelDigest != r.ModelDigest:
		return fmt.Errorf("model version %s@%s is not the receipt's %s@%s", d.Model, d.ModelDigest, r.Model, r.ModelDigest)
	case d.RequestDigest != r.RequestDigest:
		return fmt.Errorf("request digest %s is not the receipt's %s", d.RequestDigest, r.RequestDigest)
	case len(d.Executions) != 3:
		return fmt.Errorf("%d executions, want audited, auditor and referee", len(d.Executions))
	}
	byRole := map[string]*audit.Execution{}
	workers, providers := map[string]bool{}, map[string]bool{}
	for i := range d.Executions {
		e := &d.Executions[i]
		c := &e.Completion
		switch {
		case e.Role != "audited" && e.Role != "auditor" && e.Role != "referee":
			return fmt.Errorf("execution %d: unknown role %q", i, e.Role)
		case byRole[e.Role] != nil:
			return fmt.Errorf("execution %d: role %s twice", i, e.Role)
		case e.WorkerID == "" || e.Provider == "" || c.WorkerID != e.WorkerID:
			return fmt.Errorf("execution %d (%s): worker %q of provider %q, record of worker %q", i, e.Role, e.WorkerID, e.Provider, c.WorkerID)
		case workers[e.WorkerID] || providers[e.Provider]:
			return fmt.Errorf("execution %d (%s): worker %s or provider %s also ran another execution", i, e.Role, e.WorkerID, e.Provider)
		case c.RequestDigest != d.RequestDigest || c.Model != d.Model || c.ModelDigest != d.ModelDigest:
			return fmt.Errorf("execution %d (%s): another request or model version (%s, %s@%s)", i, e.Role, c.RequestDigest, c.Model, c.ModelDigest)
		case task.EndedEarly(c.FinishReason):
			return fmt.Errorf("execution %d (%s): ended early (%s), so it proves nothing", i, e.Role, c.FinishReason)
		}
		byRole[e.Role], workers[e.WorkerID], providers[e.Provider] = e, true, true
	}
	audited := &byRole["audited"].Completion
	switch {
	case audited.WorkerID != r.WorkerID:
		return fmt.Errorf("the audited execution is worker %s's, the receipt worker %s's", audited.WorkerID, r.WorkerID)
	case audited.ResponseDigest != r.ResponseDigest:
		return fmt.Errorf("the audited execution's response digest %s is not the receipt's %s", audited.ResponseDigest, r.ResponseDigest)
	case audited.PromptTokens < 0 || audited.CompletionTokens < 0 ||
		uint64(audited.PromptTokens) != r.PromptTokens || uint64(audited.CompletionTokens) != r.CompletionTokens:
		return fmt.Errorf("the audited execution's tokens %d+%d are not the receipt's %d+%d",
			audited.PromptTokens, audited.CompletionTokens, r.PromptTokens, r.CompletionTokens)
	}
	var against *audit.Execution // the disputed worker's
	var other1, other2 *task.Completion
	switch d.WorkerID {
	case byRole["audited"].WorkerID:
		against, other1, other2 = byRole["audited"], &byRole["auditor"].Completion, &byRole["referee"].Completion
	case byRole["auditor"].WorkerID:
		against, other1, other2 = byRole["auditor"], audited, &byRole["referee"].Completion
	default:
		return fmt.Errorf("the disputed worker %s is neither the audited nor the auditor", d.WorkerID)
	}
	if d.Provider != "" && d.Provider != against.Provider {
		return fmt.Errorf("the disputed provider %s is not its execution's (%s)", d.Provider, against.Provider)
	}
	disputed := &against.Completion
	// The receipt's audit state is the gateway's other statement about
	// the same audit: it must not contradict the dispute (empty while the
	// state is being recorded, as it is written after the dispute).
	wantAudit := audit.StateFailed
	if against.Role == "auditor" {
		wantAudit = audit.StatePassed
	}
	if r.Audit != "" && r.Audit != wantAudit {
		return fmt.Errorf("the receipt says audit=%s, the dispute against the %s means %s", r.Audit, against.Role, wantAudit)
	}
	same := func(a, b *task.Completion) bool {
		return a.ResponseDigest == b.ResponseDigest && a.PromptTokens == b.PromptTokens && a.CompletionTokens == b.CompletionTokens
	}
	switch d.Comparator {
	case "exact":
		if !same(other1, other2) {
			return errors.New("exact comparator, but the two executions against the disputed worker do not agree with each other")
		}
		if same(disputed, other1) {
			return errors.New("exact comparator, but the disputed worker's execution agrees with the others")
		}
	case "prefix":
		// The texts are not evidence, so only what the records show: the
		// disputed one differs from each other in its response digest or
		// in its completion tokens (equal text, inflated count: the
		// comparator's token-skew bound is the gateway's configuration).
		differs := func(a, b *task.Completion) bool {
			return a.ResponseDigest != b.ResponseDigest || a.CompletionTokens != b.CompletionTokens
		}
		if !differs(disputed, other1) || !differs(disputed, other2) {
			return errors.New("prefix comparator, but the disputed worker's record (response digest and tokens) equals another execution's")
		}
	default:
		return fmt.Errorf("unknown comparator %q", d.Comparator)
	}
	return nil
}
