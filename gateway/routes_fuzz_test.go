package gateway

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate-ai/tollgate/workers"
)

// fuzzRoutes are the admin, worker-registration and receipt routes, whose
// bodies and queries come from outside (workers and billing systems as
// well as clients).
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/admin/models"},
	{"POST", "/v1/workers/challenge"},
	{"POST", "/v1/workers/register"},
	{"POST", "/v1/workers/heartbeat"},
	{"POST", "/v1/workers/deregister"},
	{"GET", "/v1/workers"},
	{"GET", "/v1/receipts"},
	{"GET", "/v1/receipts/"},
	{"GET", "/v1/zk/keys/"},
}

// FuzzAdminAndWorkerRoutes: any body, query and path suffix on these
// routes, with any of the credentials, is answered with a 2xx or an OpenAI
// error body of a 4xx/5xx status; never a panic, never a 500 (a 500 is a
// bug the input found). Seeded from the strict-JSON and registration tests.
func FuzzAdminAndWorkerRoutes(f *testing.F) {
	digest := strings.Repeat("ab", 32)
	seeds := []struct {
		route       uint8
		suffix, q   string
		body        string
		credentials uint8
	}{
		{0, "", "", `{"name":"tiny","digest":"` + digest + `"}`, 1},
		{0, "", "", `{"name":"tiny","digest":"` + digest + `"} trailing`, 1},
		{1, "", "", `{"worker_id":"0x01"}`, 2},
		{2, "", "", `{"challenge":"c","public_key":"00","url":"http://127.0.0.1:9","models":[{"name":"tiny","digest":"` + digest + `"}],"signature":"00"}`, 2},
		{3, "", "", `{"worker_id":"0x01","load":{"waiting":1}}`, 3},
		{4, "", "", `{"worker_id":"0x01"}`, 3},
		{5, "", "", "", 1},
		{6, "", "after=5&limit=10", "", 0},
		{6, "", "after=-1&limit=99999999999999999999", "", 1},
		{7, "rcpt_x", "", "", 0},
		{8, "tollgate-batch-v2-8-abcdef", "", "", 0},
	}
	for _, s := range seeds {
		f.Add(s.route, s.suffix, s.q, []byte(s.body), s.credentials)
	}
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}})
	if err != nil {
		f.Fatal(err)
	}
	h := newHarness(f, func(c *Config, d *Deps) { d.Registry, d.Registrar = &fakeRegistry{}, registrar })
	creds := []string{testKey, adminKey, providerToken, "sess-unknown", ""}
	f.Fuzz(func(t *testing.T, route uint8, suffix, query string, body []byte, credentials uint8) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		var req fasthttp.Request
		req.Header.SetMethod(r.method)
		uri := r.path
		if strings.HasSuffix(r.path, "/") {
			uri += suffix
		}
		if query != "" {
			uri += "?" + query
		}
		req.SetRequestURI(uri)
		if k := creds[int(credentials)%len(creds)]; k != "" {
			req.Header.Set("Authorization", "Bearer "+k)
		}
		req.Header.SetContentType("application/json")
		req.SetBody(body)
		var rc fasthttp.RequestCtx
		rc.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
		h.srv.handle(&rc)
		status := rc.Response.StatusCode()
		if status == fasthttp.StatusInternalServerError {
			t.Fatalf("%s %q: 500 %s", r.method, uri, rc.Response.Body())
		}
		if status >= 400 {
			var e struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
				} `json:"error"`
			}
			if json.Unmarshal(rc.Response.Body(), &e) != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("%s %q: %d with a body that is no OpenAI error: %q", r.method, uri, status, rc.Response.Body())
			}
		}
	})
}
