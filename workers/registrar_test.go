package workers_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

const providerToken = "provider-token-0123456789"

var allowedModel = task.ModelVersion{Name: "llama3-8b", Digest: strings.Repeat("ab", 32)}

func newRegistrar(t *testing.T, open bool) *workers.Registrar {
	t.Helper()
	r, err := workers.NewRegistrar(workers.RegistrarConfig{
		ProviderTokens: []string{providerToken}, Models: []task.ModelVersion{allowedModel},
		OpenRegistration: open, ChallengeTTL: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// signedRequest builds a valid registration for challenge c signed by k.
func signedRequest(t *testing.T, k *keys.Key, c string) *workers.RegisterRequest {
	t.Helper()
	req := &workers.RegisterRequest{
		ProviderToken: providerToken, PublicKey: k.PublicHex(), Challenge: c,
		URL: "http://10.0.0.5:9000", Models: []task.ModelVersion{allowedModel},
		GPUs:           []task.GPU{{Index: 0, Name: "NVIDIA H100", UUID: "GPU-1", MemoryTotalMiB: 81559}},
		MaxConcurrency: 8,
	}
	resign(t, k, req)
	return req
}

func resign(t *testing.T, k *keys.Key, req *workers.RegisterRequest) {
	t.Helper()
	sig, err := k.SignBytes(workers.RegistrationMessage(req.Challenge, req.PublicKey, req.URL, req.Models))
	if err != nil {
		t.Fatal(err)
	}
	req.Signature = hex.EncodeToString(sig)
}

func TestRegister(t *testing.T) {
	r := newRegistrar(t, false)
	k, _ := keys.Generate(nil)
	c, err := r.Challenge(providerToken, t0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Register(context.Background(), signedRequest(t, k, c), t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if w.WorkerID != k.WorkerID() || w.PublicKey != k.PublicHex() || w.URL != "http://10.0.0.5:9000" || w.MaxConcurrency != 8 || len(w.GPUs) != 1 {
		t.Errorf("registered %+v", w)
	}
	if err := r.VerifySession(w.WorkerID, w.SessionToken); err != nil {
		t.Errorf("VerifySession: %v", err)
	}
	// A fresh countersign credential per registration, distinct from the
	// session token and never part of the worker's JSON (which the shared
	// registry stores).
	c2, _ := r.Challenge(providerToken, t0)
	w2, err := r.Register(context.Background(), signedRequest(t, k, c2), t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.CountersignToken) != 64 || w.CountersignToken == w2.CountersignToken || w.CountersignToken == w.SessionToken {
		t.Errorf("countersign credentials %q then %q (session %q): want fresh 32-byte hex ones", w.CountersignToken, w2.CountersignToken, w.SessionToken)
	}
	if raw, _ := json.Marshal(w); strings.Contains(string(raw), w.CountersignToken) {
		t.Errorf("the countersign credential is in the worker's JSON: %s", raw)
	}
	if err := r.VerifySession(w.WorkerID, "wrong"); code(err) != workers.CodeInvalidSession {
		t.Errorf("wrong token: %v", err)
	}
	if err := r.VerifySession("0xother", w.SessionToken); code(err) != workers.CodeUnknownWorker {
		t.Errorf("unknown worker: %v", err)
	}
	r.Forget(w.WorkerID)
	if err := r.VerifySession(w.WorkerID, w.SessionToken); code(err) != workers.CodeUnknownWorker {
		t.Errorf("after Forget: %v", err)
	}
}

// A registration's capabilities reach the registered worker, and a
// model without them signs the bytes it always did.
func TestRegisterCapabilities(t *testing.T) {
	r := newRegistrar(t, false)
	k, _ := keys.Generate(nil)
	c, _ := r.Challenge(providerToken, t0)
	req := signedRequest(t, k, c)
	plain := string(workers.RegistrationMessage(req.Challenge, req.PublicKey, req.URL, req.Models))
	if !strings.HasSuffix(plain, "model=llama3-8b "+allowedModel.Digest+"\n") {
		t.Errorf("plain line changed: %q", plain)
	}
	req.Models[0].Capabilities = []task.Capability{task.CapTools, task.CapJSONObject}
	resign(t, k, req)
	if msg := string(workers.RegistrationMessage(req.Challenge, req.PublicKey, req.URL, req.Models)); !strings.HasSuffix(msg, " capabilities=tools,json_object\n") {
		t.Errorf("line = %q", msg)
	}
	w, err := r.Register(context.Background(), req, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !w.Models[0].Has(task.CapTools) || !w.Models[0].Has(task.CapJSONObject) || w.Models[0].Has(task.CapN) {
		t.Errorf("registered capabilities %v", w.Models[0].Capabilities)
	}
}

func code(err error) string {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestRegisterRefusals(t *testing.T) {
	k, _ := keys.Generate(nil)
	other, _ := keys.Generate(nil)
	unregistered := task.ModelVersion{Name: "llama3-8b", Digest: strings.Repeat("cd", 32)}
	tests := []struct {
		name   string
		open   bool
		mutate func(t *testing.T, r *workers.Registrar, req *workers.RegisterRequest)
		now    time.Duration // after the challenge was issued
		status int
		code   string
	}{
		{name: "bad provider token", mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.ProviderToken = "provider-token-wrong-000000"
		}, status: 401, code: workers.CodeInvalidProviderToken},
		{name: "empty provider token", mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.ProviderToken = ""
		}, status: 401, code: workers.CodeInvalidProviderToken},
		{name: "signature by another key", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			pub := req.PublicKey
			req.PublicKey = other.PublicHex()
			resign(t, other, req)
			req.PublicKey = pub
		}, status: 401, code: workers.CodeInvalidSignature},
		{name: "signature over another url", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.URL = "http://evil:9000"
			resign(t, k, req)
			req.URL = "http://10.0.0.5:9000"
		}, status: 401, code: workers.CodeInvalidSignature},
		{name: "models changed after signing", mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models = []task.ModelVersion{unregistered}
		}, status: 401, code: workers.CodeInvalidSignature},
		// Capabilities are signed: a relay that adds one (to draw tool
		// traffic to a model that cannot serve it), drops one or reorders
		// the list breaks the signature.
		{name: "capability added after signing", mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models[0].Capabilities = []task.Capability{task.CapTools}
		}, status: 401, code: workers.CodeInvalidSignature},
		{name: "capability dropped after signing", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models[0].Capabilities = []task.Capability{task.CapTools, task.CapN}
			resign(t, k, req)
			req.Models[0].Capabilities = req.Models[0].Capabilities[:1]
		}, status: 401, code: workers.CodeInvalidSignature},
		{name: "capability renamed after signing", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models[0].Capabilities = []task.Capability{task.CapTools}
			resign(t, k, req)
			req.Models[0].Capabilities = []task.Capability{task.CapJSONSchema}
		}, status: 401, code: workers.CodeInvalidSignature},
		{name: "unknown capability", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models[0].Capabilities = []task.Capability{"telepathy"}
			resign(t, k, req)
		}, status: 400, code: workers.CodeInvalidRegistration},
		{name: "capability twice", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models[0].Capabilities = []task.Capability{task.CapTools, task.CapTools}
			resign(t, k, req)
		}, status: 400, code: workers.CodeInvalidRegistration},
		{name: "signature not hex", mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Signature = "zz"
		}, status: 400, code: workers.CodeInvalidRegistration},
		{name: "unknown challenge", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Challenge = strings.Repeat("0", 64)
			resign(t, k, req)
		}, status: 401, code: workers.CodeChallengeUnknown},
		{name: "expired challenge", now: time.Minute, status: 401, code: workers.CodeChallengeUnknown},
		{name: "replayed challenge", mutate: func(t *testing.T, r *workers.Registrar, req *workers.RegisterRequest) {
			if _, err := r.Register(context.Background(), req, t0); err != nil {
				t.Fatalf("first use: %v", err)
			}
		}, status: 401, code: workers.CodeChallengeReplayed},
		{name: "unregistered model digest", mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models = []task.ModelVersion{unregistered}
			resign(t, k, req)
		}, status: 403, code: workers.CodeModelNotRegistered},
		{name: "open registration accepts it", open: true, mutate: func(t *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) {
			req.Models = []task.ModelVersion{unregistered}
			resign(t, k, req)
		}},
	}
	malformed := []struct {
		name   string
		mutate func(req *workers.RegisterRequest)
	}{
		{"public key not hex", func(req *workers.RegisterRequest) { req.PublicKey = "nothex" }},
		{"public key not a point", func(req *workers.RegisterRequest) { req.PublicKey = strings.Repeat("ff", 32) }},
		{"challenge malformed", func(req *workers.RegisterRequest) { req.Challenge = "abc" }},
		{"url not http", func(req *workers.RegisterRequest) { req.URL = "ftp://x:1" }},
		{"url without port", func(req *workers.RegisterRequest) { req.URL = "http://worker" }},
		{"url with path", func(req *workers.RegisterRequest) { req.URL = "http://worker:1/x" }},
		{"no models", func(req *workers.RegisterRequest) { req.Models = nil }},
		{"digest too short", func(req *workers.RegisterRequest) { req.Models[0].Digest = "abcd" }},
		{"digest upper case", func(req *workers.RegisterRequest) { req.Models[0].Digest = strings.Repeat("AB", 32) }},
		{"model name too long", func(req *workers.RegisterRequest) { req.Models[0].Name = strings.Repeat("m", 257) }},
		{"model name with space", func(req *workers.RegisterRequest) { req.Models[0].Name = "a b" }},
		{"duplicate model", func(req *workers.RegisterRequest) { req.Models = append(req.Models, req.Models[0]) }},
		{"too many GPUs", func(req *workers.RegisterRequest) { req.GPUs = make([]task.GPU, 65) }},
		{"GPU utilisation over 100", func(req *workers.RegisterRequest) { req.GPUs[0].GPUUtilPct = 101 }},
		{"zero concurrency", func(req *workers.RegisterRequest) { req.MaxConcurrency = 0 }},
	}
	for _, m := range malformed {
		tests = append(tests, struct {
			name   string
			open   bool
			mutate func(t *testing.T, r *workers.Registrar, req *workers.RegisterRequest)
			now    time.Duration
			status int
			code   string
		}{name: "malformed: " + m.name, mutate: func(_ *testing.T, _ *workers.Registrar, req *workers.RegisterRequest) { m.mutate(req) },
			status: 400, code: workers.CodeInvalidRegistration})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistrar(t, tc.open)
			c, err := r.Challenge(providerToken, t0)
			if err != nil {
				t.Fatal(err)
			}
			req := signedRequest(t, k, c)
			if tc.mutate != nil {
				tc.mutate(t, r, req)
			}
			_, err = r.Register(context.Background(), req, t0.Add(tc.now))
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				return
			}
			var e *apierr.Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("Register: %v, want %d %s", err, tc.status, tc.code)
			}
			if e.Message == "" {
				t.Error("refusal without a message")
			}
		})
	}
}

func TestRegistrarConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  workers.RegistrarConfig
	}{
		{"no tokens", workers.RegistrarConfig{}},
		{"short token", workers.RegistrarConfig{ProviderTokens: []string{"short"}}},
		{"bad allow-listed model", workers.RegistrarConfig{ProviderTokens: []string{providerToken}, Models: []task.ModelVersion{{Name: "m", Digest: "x"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := workers.NewRegistrar(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAllowModel(t *testing.T) {
	r := newRegistrar(t, false)
	m := task.ModelVersion{Name: "new", Digest: strings.Repeat("01", 32)}
	if err := r.AllowModel(m); err != nil {
		t.Fatal(err)
	}
	if err := r.AllowModel(task.ModelVersion{Name: "bad"}); err == nil {
		t.Error("AllowModel accepted an empty digest")
	}
	if len(r.AllowedModels()) != 2 {
		t.Errorf("allowed = %v", r.AllowedModels())
	}
}

func TestChallengesBounded(t *testing.T) {
	r, _ := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, MaxChallenges: 2, ChallengeTTL: time.Second})
	for range 2 {
		if _, err := r.Challenge(providerToken, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Challenge(providerToken, t0); err == nil {
		t.Fatal("third outstanding challenge accepted")
	}
	if _, err := r.Challenge(providerToken, t0.Add(time.Second)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func FuzzValidateWorkerURL(f *testing.F) {
	for _, s := range []string{"http://a:1", "https://10.0.0.1:443/", "ftp://x:1", "http://u@h:1", "http://h:99999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if workers.ValidateWorkerURL(s) == nil && !strings.HasPrefix(s, "http") && !strings.HasPrefix(s, workers.LinkScheme+"://") {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzRegister(f *testing.F) {
	k, _ := keys.Generate(nil)
	f.Add(`{"provider_token":"` + providerToken + `","public_key":"` + k.PublicHex() + `","challenge":"` + strings.Repeat("a", 64) +
		`","signature":"00","url":"http://h:1","models":[{"name":"m","digest":"` + strings.Repeat("ab", 32) + `"}],"max_concurrency":1}`)
	f.Add(`{"provider_token":"` + providerToken + `","models":[{}],"gpus":[{"index":-1}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var req workers.RegisterRequest
		if json.Unmarshal([]byte(body), &req) != nil {
			return
		}
		r, _ := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
		w, err := r.Register(context.Background(), &req, t0)
		if err == nil {
			t.Fatalf("registered without a challenge: %+v", w)
		}
		var e *apierr.Error
		if !errors.As(err, &e) || e.Status < 400 || e.Status > 403 {
			t.Fatalf("refusal %v is not a 400..403 apierr", err)
		}
	})
}

// Challenges need a provider token; each token has its own bound.
func TestChallengesNeedAProviderToken(t *testing.T) {
	other := "pt-other-provider-0000"
	r, _ := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken, other}, MaxChallenges: 2, ChallengeTTL: time.Second})
	for _, tok := range []string{"", "pt-wrong-0000000000"} {
		if _, err := r.Challenge(tok, t0); code(err) != workers.CodeInvalidProviderToken {
			t.Errorf("token %q: %v, want %s", tok, err, workers.CodeInvalidProviderToken)
		}
	}
	for range 2 {
		if _, err := r.Challenge(providerToken, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Challenge(providerToken, t0); err == nil {
		t.Fatal("third outstanding challenge accepted")
	}
	// Another provider is not starved by the first one's flood.
	if _, err := r.Challenge(other, t0); err != nil {
		t.Fatalf("other provider: %v", err)
	}
}

// BenchmarkChallengeFull issues challenges against a full table, each
// call pruning the oldest (the old code scanned the whole table).
func BenchmarkChallengeFull(b *testing.B) {
	const n = 10_000
	r, _ := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, MaxChallenges: n, ChallengeTTL: time.Duration(n) * time.Millisecond})
	now := t0
	for range n {
		now = now.Add(time.Millisecond)
		if _, err := r.Challenge(providerToken, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		if _, err := r.Challenge(providerToken, now); err != nil {
			b.Fatal(err)
		}
	}
}
