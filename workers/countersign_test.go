package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

type producedMap map[string]*Completion

func (m producedMap) Produced(id string) (*Completion, bool) {
	c, ok := m[id]
	if !ok {
		return nil, false
	}
	cp := *c
	return &cp, true
}

func countersignKey(t *testing.T) *keys.Key {
	t.Helper()
	r := rand.New(rand.NewPCG(9, 9))
	key, err := keys.Generate(bytes.NewReader(func() []byte {
		b := make([]byte, 64)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}()))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

func produced(workerID string, n int) producedMap {
	m := producedMap{}
	for i := range n {
		id := fmt.Sprintf("req-%d", i)
		m[id] = &Completion{RequestID: id, WorkerID: workerID, Model: "m", ModelDigest: digest("weights"),
			RequestDigest: digest("rq" + id), ResponseDigest: digest("rs" + id), Subject: "key_1",
			PromptTokens: 10 + i, CompletionTokens: 20 + i, Time: time.Unix(1700000000, int64(i)).UTC()}
	}
	return m
}

func request(m producedMap, ids ...string) *CountersignRequest {
	req := &CountersignRequest{Sequence: 3, Capacity: 8, Model: "m", ModelDigest: digest("weights"), Time: time.Unix(1700000100, 5).UTC()}
	for _, id := range ids {
		req.Completions = append(req.Completions, *m[id])
	}
	return req
}

func TestCountersign(t *testing.T) {
	key := countersignKey(t)
	wid := key.WorkerID()
	own := produced(wid, 3)
	cs := NewCountersigner(key, own, nil)

	tests := []struct {
		name    string
		req     func() *CountersignRequest
		refused bool
	}{
		{"own records", func() *CountersignRequest { return request(own, "req-0", "req-1", "req-2") }, false},
		{"never produced", func() *CountersignRequest {
			r := request(own, "req-0")
			extra := *own["req-1"]
			extra.RequestID = "req-999"
			r.Completions = append(r.Completions, extra)
			return r
		}, true},
		{"tokens inflated", func() *CountersignRequest {
			r := request(own, "req-0", "req-1")
			r.Completions[1].CompletionTokens++
			return r
		}, true},
		{"response digest changed", func() *CountersignRequest {
			r := request(own, "req-0")
			r.Completions[0].ResponseDigest = digest("other")
			return r
		}, true},
		{"other model version", func() *CountersignRequest {
			r := request(own, "req-0")
			r.ModelDigest = digest("other weights")
			return r
		}, true},
		{"duplicate leaf", func() *CountersignRequest { return request(own, "req-0", "req-0") }, true},
		{"time changed", func() *CountersignRequest {
			r := request(own, "req-2")
			r.Completions[0].Time = r.Completions[0].Time.Add(time.Second)
			return r
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req()
			resp, err := cs.Countersign(context.Background(), req)
			if tt.refused {
				var ae *apierr.Error
				if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != "countersign_refused" {
					t.Fatalf("err = %v, want 403 countersign_refused", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaves := make([]fr.Element, req.Capacity)
			var tp, tc uint64
			for i, c := range req.Completions {
				rq, _ := receipts.ParseDigest(c.RequestDigest)
				rs, _ := receipts.ParseDigest(c.ResponseDigest)
				rc, _ := receipts.RequestCommitment(receipts.RequestFields{RequestID: c.RequestID, RequestDigest: rq, ResponseDigest: rs, Subject: c.Subject, Time: c.Time})
				leaves[i], _ = receipts.Leaf(rc, uint64(c.PromptTokens), uint64(c.CompletionTokens))
				tp += uint64(c.PromptTokens)
				tc += uint64(c.CompletionTokens)
			}
			root := receipts.MerkleRoot(leaves)
			if resp.Root != receipts.ElementHex(root) {
				t.Fatalf("root %s, want %s", resp.Root, receipts.ElementHex(root))
			}
			w, _ := receipts.ParseDigest(req.ModelDigest)
			msg := receipts.BatchMessageV2(root, receipts.ModelVersionCommitment(req.Model, w), uint64(len(req.Completions)), tp, tc, req.Sequence, uint64(req.Time.UnixNano()))
			sig, _ := base64.StdEncoding.DecodeString(resp.Signature)
			if err := receipts.VerifyBatchSignature(key.Public(), msg, sig); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCountersignOverHTTP(t *testing.T) {
	key := countersignKey(t)
	own := produced(key.WorkerID(), 2)
	srv := httptest.NewServer(NewCountersigner(key, own, nil))
	defer srv.Close()
	if _, err := RequestCountersign(context.Background(), srv.Client(), srv.URL, request(own, "req-0", "req-1")); err != nil {
		t.Fatal(err)
	}
	bad := request(own, "req-0")
	bad.Completions[0].RequestID = "req-404"
	_, err := RequestCountersign(context.Background(), srv.Client(), srv.URL, bad)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("err = %v, want a 403 refusal", err)
	}
}

// FuzzCountersign feeds arbitrary request bodies to the countersigner: it
// must never panic and never sign a record it did not produce.
func FuzzCountersign(f *testing.F) {
	seedKey := func() *keys.Key {
		k, err := keys.Generate(bytes.NewReader(bytes.Repeat([]byte{3}, 64)))
		if err != nil {
			f.Fatal(err)
		}
		return k
	}()
	own := produced(seedKey.WorkerID(), 2)
	good, _ := json.Marshal(request(own, "req-0", "req-1"))
	f.Add(good)
	f.Add([]byte(`{"capacity":8,"completions":[{"request_id":"x"}]}`))
	f.Add([]byte(`{}`))
	cs := NewCountersigner(seedKey, own, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req CountersignRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		if _, err := cs.Countersign(context.Background(), &req); err != nil {
			return
		}
		for _, c := range req.Completions {
			mine, ok := own[c.RequestID]
			if !ok || !sameCompletion(mine, &c) {
				t.Fatalf("signed a record it did not produce: %+v", c)
			}
		}
	})
}
