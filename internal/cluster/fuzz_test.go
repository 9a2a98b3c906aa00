package cluster

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// FuzzParseRecord: a worker record read back from Redis (anyone who can
// write to the shared Redis writes these) is either refused or a
// registration that names the worker it is filed under, with an http(s)
// URL, a session token and valid model versions; it never panics.
// Seeded from TestInvalidRecordsSkipped.
func FuzzParseRecord(f *testing.F) {
	good := `{"worker_id":"%s","url":"http://127.0.0.1:9","session_token":"t","models":[{"name":"m","digest":"` + strings.Repeat("ab", 32) + `"}]}`
	for _, tc := range []struct{ id, reg, hb, at string }{
		{"bad-json", `{`, "", "1700000000000"},
		{"other-id", fmt.Sprintf(good, "someone-else"), "", "1700000000000"},
		{"bad-url", strings.Replace(fmt.Sprintf(good, "bad-url"), "http://127.0.0.1:9", "file:///etc", 1), "", "1700000000000"},
		{"bad-hb", fmt.Sprintf(good, "bad-hb"), `{"worker_id":"x"}`, "1700000000000"},
		{"bad-at", fmt.Sprintf(good, "bad-at"), "", "soon"},
		{"ok", fmt.Sprintf(good, "ok"), "", "1700000000000"},
		{"ok-hb", fmt.Sprintf(good, "ok-hb"), `{"worker_id":"ok-hb","load":{"waiting":3}}`, "1700000000000"},
	} {
		f.Add(tc.id, tc.reg, tc.hb, tc.at, true)
	}
	f.Fuzz(func(t *testing.T, id, reg, hb, at string, present bool) {
		v := []any{reg, hb, at}
		if !present {
			v[0] = nil
		}
		rec, err := parseRecord(id, v)
		if err != nil || rec == nil {
			return
		}
		if rec.reg.WorkerID != id || rec.reg.SessionToken == "" || len(rec.reg.Models) == 0 || rec.at <= 0 {
			t.Fatalf("accepted record %+v at %d for %q", rec.reg, rec.at, id)
		}
		if u, err := url.Parse(rec.reg.URL); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			t.Fatalf("accepted URL %q", rec.reg.URL)
		}
		for _, m := range rec.reg.Models {
			if err := task.ValidateModelVersion(m); err != nil {
				t.Fatalf("accepted model %+v: %v", m, err)
			}
		}
		if rec.hb != nil && rec.hb.WorkerID != id {
			t.Fatalf("accepted heartbeat of %q for %q", rec.hb.WorkerID, id)
		}
	})
}
