package gateway

import (
	"testing"
)

// TestRequestTaskMatchesTheRoutes: the task RequestTask rebuilds from a
// client's body has the digest of the task the gateway dispatched for it,
// defaults included (temperature and top_p 1, completions' max_tokens 16,
// content parts joined), so a client can recompute its receipt's
// request_digest.
func TestRequestTaskMatchesTheRoutes(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", chatOK},
		{"/v1/chat/completions", `{"model":"tiny","messages":[{"role":"system","content":"be brief","name":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"max_completion_tokens":7,"temperature":0.2,"seed":4,"stop":"x","stream":true}`},
		{"/v1/completions", `{"model":"tiny","prompt":"Once","top_p":0.5,"stop":["a","b"]}`},
		{"/v1/embeddings", `{"model":"tiny","input":["a","b"],"encoding_format":"base64"}`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			h := newHarness(t, nil)
			resp := h.do(t, "POST", tc.path, testKey, tc.body, HeaderRequestID, "req-canon")
			if body := readAll(t, resp); resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			sent := h.disp.lastTask()
			got, err := RequestTask([]byte(tc.body), sent.RequestID, "key1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest() != sent.Digest() {
				t.Errorf("digest of the rebuilt task %+v differs from the one dispatched %+v", got, sent)
			}
		})
	}
	if _, err := RequestTask([]byte(`{"model":"tiny"}`), "r", "k"); err == nil {
		t.Error("a body of no known kind mapped")
	}
}
