package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// The attack: an operator ships the gateway's log to a shared place; a
// client sends malformed requests that carry credentials (its own, or
// ones it found) in every spot a parser might quote into an error. No
// API key, admin key, provider token or session token may reach the log.
func TestNoSecretsInLogs(t *testing.T) {
	const (
		apiKey    = "sk-leak-api-0123456789"
		admin     = "sk-leak-admin-0123456789"
		provider  = "pt-leak-provider-0123456789"
		bareToken = "Zq7XvLw2NpR8sT4u" // a key with no recognisable shape
	)
	logs := &lockedBuffer{}
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{provider}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) {
		c.APIKeys = append(c.APIKeys, APIKey{ID: "leaky", Key: apiKey}, APIKey{ID: "bare", Key: bareToken})
		c.AdminKeys = append(c.AdminKeys, admin)
		d.Registry, d.Registrar = &fakeRegistry{}, registrar
		d.Logger = obs.Logger(obs.LogConfig{Format: "json", Level: "debug", Output: logs})
	})
	// A registered worker, for a real session token.
	wkey, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: wkey.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://" + h.ln.Addr().String(), ProviderToken: provider,
		Key: wkey, AdvertiseURL: "http://127.0.0.1:9", Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	session := m.SessionToken()
	secrets := map[string]string{"api key": apiKey, "admin key": admin, "provider token": provider, "session token": session, "shapeless key": bareToken}

	addr := h.ln.Addr().String()
	for name, s := range secrets {
		// Raw: header bytes fasthttp or the guard refuses, each carrying s.
		for _, raw := range []string{
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\nX-Bad: a\x00b\r\n\r\n",
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\x01\r\n\r\n",
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\n folded\r\n\r\n",
			"POST /v1/" + s + " HTTP/1.1\r\nHost: x\r\n" + s + ": x\r\n\r\n",
			"GET /v1/models/" + s + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + s + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
			"POST /v1/chat/completions?api_key=" + s + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\nContent-Length: 3\r\n\r\n{\"" + s[:1],
			"POST /v1/chat/completions HTTP/1.1\r\nHost: " + s + "\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\n\r\n",
			"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer " + s + "\r\n\r\n", // no Host
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 200)+"\r\n", 400) + "\r\n",
			"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s + "\r\nContent-Length: 999999999\r\n\r\n",
		} {
			rawExchangeFor(t, addr, raw, 300*time.Millisecond)
		}
		// Well-framed requests with s where a message might quote it.
		for _, tc := range []struct{ method, path, key, body string }{
			{"POST", "/v1/chat/completions", s, `{"model":"tiny","messages":[`},
			{"POST", "/v1/chat/completions", testKey, `{"model":"` + s + `","messages":[{"role":"user","content":"hi"}]}`},
			{"POST", "/v1/chat/completions", testKey, `{"` + s + `":1}`},
			{"POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":"` + s + `"}`},
			{"POST", "/v1/chat/completions", testKey, `{"model":"tiny","messages":[{"role":"` + s + `","content":"hi"}]}`},
			{"POST", "/v1/embeddings", testKey, `{"model":"tiny","input":[` + s + `]}`},
			{"GET", "/v1/models/" + s, testKey, ""},
			{"GET", "/v1/receipts/" + s, s, ""},
			{"GET", "/v1/receipts?after=" + s + "&limit=" + s, testKey, ""},
			{"POST", "/v1/admin/models", s, `{"name":"` + s + `","digest":"` + s + `"}`},
			{"POST", "/v1/admin/models", admin, `{"name":"` + s + `","digest":"` + s + `"} trailing ` + s},
			{"POST", "/v1/workers/register", "", `{"provider_token":"` + s + `","public_key":"` + s + `","challenge":"` + s + `"}`},
			{"POST", "/v1/workers/register", "", `{"provider_token":` + s + `}`},
			{"POST", "/v1/workers/heartbeat", s, `{"worker_id":"` + s + `"}`},
			{"POST", "/v1/workers/heartbeat", s, `{"worker_id":"` + wkey.WorkerID() + `","gpus":"` + s + `"}`},
			{"POST", "/v1/workers/deregister", s, `{"worker_id":"` + s + `"}`},
			{"POST", "/v1/workers/" + s, s, ""},
		} {
			resp := h.do(t, tc.method, tc.path, tc.key, tc.body, "X-Request-Id", s, "traceparent", s, "OpenAI-Organization", s)
			readAll(t, resp)
		}
		// A bearer value in the wrong case, with a tab.
		resp := h.do(t, "POST", "/v1/chat/completions", "", chatOK, "Authorization", "bEaReR\t"+s)
		readAll(t, resp)
		_ = name
	}
	time.Sleep(50 * time.Millisecond) // let the last connections' handlers log
	out := logs.String()
	if testing.Verbose() {
		t.Log(out)
	}
	if !strings.Contains(out, "request failed") {
		t.Fatalf("the probe logged nothing to check:\n%s", out)
	}
	for name, s := range secrets {
		if n := strings.Count(out, s); n > 0 {
			i := strings.Index(out, s)
			t.Errorf("%s found %d times in the log, e.g. …%s…", name, n, out[max(0, i-200):min(len(out), i+len(s)+40)])
		}
	}
	_ = http.MethodGet
}
