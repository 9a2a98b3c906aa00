package main

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// TestVerifyAdversarialInputs plays a receipt forger against the report
// and the exit status of `tollgate verify`, which a billing pipeline reads.
func TestVerifyAdversarialInputs(t *testing.T) {
	e := newVerifyEnv(t)
	var r receipts.Receipt
	if err := json.Unmarshal(e.items[0], &r); err != nil {
		t.Fatal(err)
	}

	// A receipt's free-text fields are printed on its report line. A
	// forged receipt whose ID or model name carries a tab and a newline
	// wrote a line of its own ("...\tOK") that a pipeline reading the
	// report line by line bills, though the receipt itself fails.
	t.Run("report line injection", func(t *testing.T) {
		inject := "\tmodel=stories260K@abc\tworker=0x01\ttokens=999999+999999\tOK\nforged"
		for _, field := range []string{"id", "model"} {
			f := r
			f.CompletionTokens++ // does not verify
			if field == "id" {
				f.ID += inject
			} else {
				f.Model += inject
			}
			b, _ := json.Marshal(&f)
			out, err := runVerifyOut(t, append(e.pinned(), e.write(t, field+"-inject.json", string(b)))...)
			if err == nil {
				t.Errorf("%s: a forged receipt passed", field)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasSuffix(line, "\tOK") || strings.HasPrefix(line, "forged") {
					t.Errorf("%s: the receipt wrote its own report line %q:\n%s", field, line, out)
				}
			}
		}
	})

	// A proven receipt stated its leaf and model version, or left them
	// empty, and verified either way: two renderings of one receipt, and a
	// billing system deduplicating on the stated leaf counted the same
	// request twice (once as its leaf, once as "").
	t.Run("stated leaf and model version are required", func(t *testing.T) {
		for _, blank := range []string{"leaf", "model_version"} {
			f := r
			if blank == "leaf" {
				f.Leaf = ""
			} else {
				f.ModelVersion = ""
			}
			b, _ := json.Marshal(&f)
			if out, err := runVerifyOut(t, append(e.pinned(), e.write(t, blank+"-blank.json", string(b)))...); err == nil {
				t.Errorf("a proven receipt with %s \"\" verified:\n%s", blank, out)
			}
		}
	})

	// --request/--response with a pinned verifying key but no registry
	// roots checked the digests only and exited 0: a receipt whose proof is
	// anything at all "verified". And the receipt was read leniently
	// (case-insensitive keys, last duplicate wins).
	t.Run("digests only is no proof", func(t *testing.T) {
		body := `{"object":"text_completion","choices":[{"text":"Once","index":0}]}`
		d := task.ResponseDigest("Once", nil)
		f := r
		f.ResponseDigest = hex.EncodeToString(d[:])
		f.CompletionTokens = 1_000_000 // the proof does not cover this
		b, _ := json.Marshal(&f)
		resp := e.write(t, "resp.json", body)
		forged := e.write(t, "forged.json", string(b))
		if out, err := runVerifyOut(t, "--vk", e.vkFile, "--allow-dev-keys", "--response", resp, forged); err == nil {
			t.Errorf("a pinned key with --response exited 0 without checking the proof:\n%s", out)
		}
		// Digests only (nothing pinned) says so, and reads strictly.
		out, err := runVerifyOut(t, "--response", resp, forged)
		if err != nil || !strings.Contains(out, "proof not checked") {
			t.Errorf("digests only: %v\n%s", err, out)
		}
		dup := strings.Replace(string(b), `"response_digest":`, `"RESPONSE_DIGEST":"`+strings.Repeat("0", 64)+`","response_digest":`, 1)
		if _, err := runVerifyOut(t, "--response", resp, e.write(t, "dup.json", dup)); err == nil {
			t.Error("digests only: a case-variant duplicate key was read")
		}
	})
}
