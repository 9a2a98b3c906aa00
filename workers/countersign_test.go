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
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

type producedMap map[string]*task.Completion

func (m producedMap) Produced(id string) (*task.Completion, bool) {
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
		m[id] = &task.Completion{RequestID: id, WorkerID: workerID, Model: "m", ModelDigest: digest("weights"),
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
	const cred = "0123456789abcdef0123456789abcdef"
	srv := httptest.NewServer(NewCountersigner(key, own, nil, WithCountersignCredential(func() string { return cred })))
	defer srv.Close()
	if _, err := RequestCountersign(context.Background(), srv.Client(), srv.URL, cred, request(own, "req-0", "req-1")); err != nil {
		t.Fatal(err)
	}
	bad := request(own, "req-0")
	bad.Completions[0].RequestID = "req-404"
	_, err := RequestCountersign(context.Background(), srv.Client(), srv.URL, cred, bad)
	var ae *apierr.Error
	var re *RefusedError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !errors.As(err, &re) {
		t.Fatalf("err = %v, want a 403 refusal", err)
	}
	if len(re.Records) != 1 || re.Records[0].RequestID != "req-404" || re.Records[0].Code != RefuseUnknownRecord {
		t.Errorf("refused records %+v, want req-404 unknown_record", re.Records)
	}
}

// TestCountersignNeedsTheCredential: the countersign route accepts only
// the gateway's provers, which hold the credential issued at registration.
// On the old route anyone who could reach the worker's port got a
// signature.
func TestCountersignNeedsTheCredential(t *testing.T) {
	key := countersignKey(t)
	own := produced(key.WorkerID(), 2)
	const cred = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		current func() string // the worker's credential; nil: no option
		present string        // what the caller presents
		wantOK  bool
	}{
		{"the issued credential", func() string { return cred }, cred, true},
		{"none presented", func() string { return cred }, "", false},
		{"a wrong one", func() string { return cred }, cred[:31] + "0", false},
		{"a prefix of it", func() string { return cred }, cred[:16], false},
		{"worker not registered yet", func() string { return "" }, "", false},
		{"no credential configured", nil, cred, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []CountersignOption
			if tt.current != nil {
				opts = append(opts, WithCountersignCredential(tt.current))
			}
			srv := httptest.NewServer(NewCountersigner(key, own, nil, opts...))
			defer srv.Close()
			_, err := RequestCountersign(context.Background(), srv.Client(), srv.URL, tt.present, request(own, "req-0"))
			if tt.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || ae.Code != CodeCountersignUnauthorized {
				t.Fatalf("err = %v, want 401 %s", err, CodeCountersignUnauthorized)
			}
		})
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

// TestCountersignNeverSignsALeafTwice replays a countersign: the old route
// signed the same leaves again under a new sequence, which proved as a
// second valid receipt for one request. Now the same batch asked again gets
// its first signature back, and any other batch holding a signed leaf is
// refused for that leaf, naming the batch it was signed in.
func TestCountersignNeverSignsALeafTwice(t *testing.T) {
	key := countersignKey(t)
	own := produced(key.WorkerID(), 4)
	cs := NewCountersigner(key, own, nil)
	ctx := context.Background()
	first, err := cs.Countersign(ctx, request(own, "req-0", "req-1"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     func() *CountersignRequest
		refused map[string]string // request ID → code; nil: the first signature again
	}{
		{"the same batch again", func() *CountersignRequest { return request(own, "req-0", "req-1") }, nil},
		{"same leaves, next sequence", func() *CountersignRequest {
			r := request(own, "req-0", "req-1")
			r.Sequence++
			return r
		}, map[string]string{"req-0": RefuseAlreadyCountersigned, "req-1": RefuseAlreadyCountersigned}},
		{"one signed leaf among new ones", func() *CountersignRequest { return request(own, "req-2", "req-1", "req-3") },
			map[string]string{"req-1": RefuseAlreadyCountersigned}},
		{"same sequence, a leaf more", func() *CountersignRequest { return request(own, "req-0", "req-1", "req-2") },
			map[string]string{"req-0": RefuseAlreadyCountersigned, "req-1": RefuseAlreadyCountersigned}},
		{"same sequence, a leaf less", func() *CountersignRequest { return request(own, "req-0") },
			map[string]string{"req-0": RefuseAlreadyCountersigned}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cs.Countersign(ctx, tt.req())
			if tt.refused == nil {
				if err != nil || resp.Signature != first.Signature || !resp.Repeated {
					t.Fatalf("resp %+v err %v, want the first signature, repeated", resp, err)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (resp %+v), want a refusal", err, resp)
			}
			got := map[string]string{}
			for _, r := range re.Records {
				got[r.RequestID] = r.Code
				if r.Code == RefuseAlreadyCountersigned && (r.Sequence != 3 || r.Root != first.Root) {
					t.Errorf("%s: names batch %d root %s, want 3 %s", r.RequestID, r.Sequence, r.Root, first.Root)
				}
			}
			if diff := cmp.Diff(got, tt.refused); diff != "" {
				t.Errorf("refused (-got +want):\n%s", diff)
			}
		})
	}
}

// TestCountersignRaceSignsOnce: two provers asking at once for two batches
// sharing a leaf get one signature between them.
func TestCountersignRaceSignsOnce(t *testing.T) {
	key := countersignKey(t)
	own := produced(key.WorkerID(), 3)
	cs := NewCountersigner(key, own, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	signed := 0
	for k := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := request(own, "req-0", "req-1", "req-2")
			r.Sequence = uint64(10 + k)
			if _, err := cs.Countersign(context.Background(), r); err == nil {
				mu.Lock()
				signed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if signed != 1 {
		t.Errorf("%d of 8 racing batches over the same leaves were signed, want 1", signed)
	}
}
