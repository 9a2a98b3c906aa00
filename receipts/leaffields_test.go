package receipts

import (
	"strings"
	"testing"
	"time"
)

// FuzzCheckLeafFields: CheckLeafFields, which a ledger runs on every record
// instead of hashing it, accepts exactly the receipts whose leaf the
// prover can compute. A receipt it let through that LeafFields refuses
// would be acknowledged and then never proven.
func FuzzCheckLeafFields(f *testing.F) {
	d := strings.Repeat("ab", 32)
	f.Add("req_1", d, d, "m", d, "key_1", int64(1_800_000_000_000_000_000), uint64(12), uint64(34))
	f.Add("", d, d, "m", d, "", int64(0), uint64(0), uint64(0))
	f.Add("r", d[:62], d, "m", d, "", int64(1), uint64(1), uint64(1))
	f.Add("r", strings.ToUpper(d), d, "m", d, "", int64(1), uint64(1), uint64(1))
	f.Add("r", d, d, "", d, "", int64(1), uint64(1), uint64(1))
	f.Add("r", d, d, "m", d, "", int64(-1), uint64(1), uint64(1))
	f.Add("r", d, d, "m", d, "", int64(1), uint64(MaxTokens+1), uint64(1))
	f.Add("r", d, d, "m", "zz"+d[2:], "", int64(1), uint64(1), uint64(MaxTokens))
	f.Fuzz(func(t *testing.T, id, rq, rs, model, md, subject string, ns int64, prompt, completion uint64) {
		r := &Receipt{RequestID: id, RequestDigest: rq, ResponseDigest: rs, Model: model, ModelDigest: md,
			Subject: subject, Time: time.Unix(0, ns).UTC(), PromptTokens: prompt, CompletionTokens: completion}
		checked := r.CheckLeafFields()
		_, _, _, err := r.LeafFields()
		if (checked == nil) != (err == nil) {
			t.Fatalf("CheckLeafFields %v, LeafFields %v for %+v", checked, err, r)
		}
	})
}
