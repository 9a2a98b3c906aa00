package gateway

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/cors"
	"github.com/valyala/fasthttp"
)

const allowedOrigin = "https://app.example"

func corsHarness(t *testing.T, mutate func(*Config)) *harness {
	return newHarness(t, func(c *Config, _ *Deps) {
		c.CORS = cors.Config{AllowedOrigins: []string{allowedOrigin, "http://localhost:5173"}}
		if mutate != nil {
			mutate(c)
		}
	})
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error struct{ Type, Code string } }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error: %s (%v)", body, err)
	}
	return e.Error.Code
}

var corsHeaderNames = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
	"Access-Control-Allow-Credentials", "Access-Control-Expose-Headers", "Access-Control-Max-Age"}

func noCORSHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	for _, name := range corsHeaderNames {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("%s: %q leaked", name, v)
		}
	}
}

func TestCORSPreflight(t *testing.T) {
	h := corsHarness(t, nil)
	reqHeaders := "authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-retry-count, openai-organization"
	for _, tc := range []struct {
		name, path, origin string
		wantStatus         int
		wantCode           string // error code, for a refusal
	}{
		{name: "allowed", path: "/v1/chat/completions", origin: allowedOrigin, wantStatus: 204},
		{name: "allowed localhost", path: "/v1/models", origin: "http://localhost:5173", wantStatus: 204},
		{name: "suffix look-alike", path: "/v1/chat/completions", origin: "https://app.example.evil.com", wantStatus: 403, wantCode: "origin_not_allowed"},
		{name: "prefix look-alike", path: "/v1/chat/completions", origin: "https://evil-app.example", wantStatus: 403, wantCode: "origin_not_allowed"},
		{name: "null origin", path: "/v1/chat/completions", origin: "null", wantStatus: 403, wantCode: "origin_not_allowed"},
		{name: "other scheme", path: "/v1/chat/completions", origin: "http://app.example", wantStatus: 403, wantCode: "origin_not_allowed"},
		{name: "other port", path: "/v1/chat/completions", origin: "http://localhost:5174", wantStatus: 403, wantCode: "origin_not_allowed"},
		{name: "unknown path", path: "/v1/nope", origin: allowedOrigin, wantStatus: 404, wantCode: "unknown_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No API key: browsers send none on a preflight.
			resp := h.do(t, "OPTIONS", tc.path, "", "", "Origin", tc.origin,
				"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", reqHeaders)
			body := readAll(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantStatus != 204 {
				if got := errorCode(t, body); got != tc.wantCode {
					t.Errorf("code %q, want %q", got, tc.wantCode)
				}
				if tc.wantStatus == 403 {
					noCORSHeaders(t, resp)
				}
				return
			}
			for name, want := range map[string]string{
				"Access-Control-Allow-Origin":  tc.origin,
				"Access-Control-Allow-Methods": cors.Methods,
				"Access-Control-Allow-Headers": reqHeaders,
				"Access-Control-Max-Age":       "600",
			} {
				if got := resp.Header.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if v := resp.Header.Values("Vary"); !strings.Contains(strings.Join(v, ","), "Origin") {
				t.Errorf("Vary %q lacks Origin", v)
			}
			if v := resp.Header.Get("Access-Control-Allow-Credentials"); v != "" {
				t.Errorf("Allow-Credentials %q with credentials off", v)
			}
		})
	}
}

func TestCORSOffByDefault(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "OPTIONS", "/v1/chat/completions", "", "", "Origin", allowedOrigin, "Access-Control-Request-Method", "POST")
	readAll(t, resp)
	if resp.StatusCode != 405 {
		t.Errorf("preflight with CORS off: %d, want 405", resp.StatusCode)
	}
	noCORSHeaders(t, resp)
	resp = h.do(t, "POST", "/v1/chat/completions", testKey, chatOK, "Origin", allowedOrigin)
	readAll(t, resp)
	noCORSHeaders(t, resp)
}

// TestCORSActualResponses: successes, errors (auth, rate limit, bad body)
// and streams all carry the allow-origin and expose headers for an allowed
// origin, and nothing for another.
func TestCORSActualResponses(t *testing.T) {
	h := corsHarness(t, func(c *Config) { c.APIKeys[0].RequestsPerMinute = 2 })
	expose := strings.Join(cors.ExposedHeaders, ", ")
	for _, tc := range []struct {
		name, key, body, origin string
		wantStatus              int
		allowed                 bool
	}{
		{name: "json", key: testKey, body: chatOK, origin: allowedOrigin, wantStatus: 200, allowed: true},
		{name: "stream", key: testKey, body: `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`, origin: allowedOrigin, wantStatus: 200, allowed: true},
		{name: "rate limited", key: testKey, body: chatOK, origin: allowedOrigin, wantStatus: 429, allowed: true},
		{name: "bad key", key: "sk-wrong", body: chatOK, origin: allowedOrigin, wantStatus: 401, allowed: true},
		{name: "bad body", key: "sk-batch", body: `{`, origin: allowedOrigin, wantStatus: 400, allowed: true},
		{name: "disallowed origin", key: "sk-batch", body: chatOK, origin: "https://app.example.evil.com", wantStatus: 200},
		{name: "no origin", key: "sk-batch", body: chatOK, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.origin != "" {
				hdr = []string{"Origin", tc.origin}
			}
			resp := h.do(t, "POST", "/v1/chat/completions", tc.key, tc.body, hdr...)
			body := readAll(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q lacks Origin", resp.Header.Values("Vary"))
			}
			if !tc.allowed {
				noCORSHeaders(t, resp)
				return
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tc.origin {
				t.Errorf("Allow-Origin %q, want %q", got, tc.origin)
			}
			if got := resp.Header.Get("Access-Control-Expose-Headers"); got != expose {
				t.Errorf("Expose-Headers %q, want %q", got, expose)
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) { c.APIKeys[0].RequestsPerMinute, c.APIKeys[0].TokensPerMinute = 2, 100 })
	want := []map[string]string{
		{"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "30s",
			"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "0s"},
		// 7 tokens charged after the first: 4.2 s to refill them.
		{"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s",
			"x-ratelimit-remaining-tokens": "93", "x-ratelimit-reset-tokens": "4.2s"},
		// The 429 still says why.
		{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s", "x-ratelimit-remaining-tokens": "86"},
	}
	for i, w := range want {
		resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK)
		readAll(t, resp)
		if i == 2 && resp.StatusCode != 429 {
			t.Fatalf("call %d: status %d, want 429", i, resp.StatusCode)
		}
		for k, v := range w {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("call %d: %s = %q, want %q", i, k, got, v)
			}
		}
	}
	// A key without limits gets none of the headers.
	resp := h.do(t, "POST", "/v1/chat/completions", "sk-batch", chatOK)
	readAll(t, resp)
	for _, name := range rateHeaderNames {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("unlimited key: %s = %q", name, v)
		}
	}
}

func compress(t *testing.T, enc string, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw-deflate":
		w, _ = flate.NewWriter(&buf, flate.BestCompression)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestCompressedRequestBodies(t *testing.T) {
	h := newHarness(t, nil) // BodyLimit 64 KiB
	// A bomb: 64 KiB + 1 of spaces inflates from a few hundred bytes.
	bomb := compress(t, "gzip", append([]byte(chatOK), bytes.Repeat([]byte(" "), 64<<10)...))
	// Exactly at the limit still fits.
	atLimit := compress(t, "gzip", append([]byte(chatOK), bytes.Repeat([]byte(" "), 64<<10-len(chatOK))...))
	for _, tc := range []struct {
		name, key, enc, body string
		wantStatus           int
		wantCode             string
	}{
		{name: "gzip", key: testKey, enc: "gzip", body: compress(t, "gzip", []byte(chatOK)), wantStatus: 200},
		{name: "x-gzip upper case", key: testKey, enc: "X-GZIP", body: compress(t, "gzip", []byte(chatOK)), wantStatus: 200},
		{name: "deflate (zlib)", key: testKey, enc: "deflate", body: compress(t, "deflate", []byte(chatOK)), wantStatus: 200},
		{name: "deflate (raw)", key: testKey, enc: "deflate", body: compress(t, "raw-deflate", []byte(chatOK)), wantStatus: 200},
		{name: "identity", key: testKey, enc: "identity", body: chatOK, wantStatus: 200},
		{name: "at the limit", key: testKey, enc: "gzip", body: atLimit, wantStatus: 200},
		{name: "bomb", key: testKey, enc: "gzip", body: bomb, wantStatus: 413, wantCode: "request_too_large"},
		{name: "unknown encoding", key: testKey, enc: "br", body: chatOK, wantStatus: 415, wantCode: "unsupported_content_encoding"},
		{name: "stacked encodings", key: testKey, enc: "gzip, gzip", body: compress(t, "gzip", []byte(compress(t, "gzip", []byte(chatOK)))), wantStatus: 415, wantCode: "unsupported_content_encoding"},
		{name: "corrupt gzip", key: testKey, enc: "gzip", body: "\x1f\x8bnot gzip at all", wantStatus: 400, wantCode: "invalid_content_encoding"},
		{name: "truncated gzip", key: testKey, enc: "gzip", body: compress(t, "gzip", []byte(chatOK))[:20], wantStatus: 400, wantCode: "invalid_content_encoding"},
		{name: "plain body labelled gzip", key: testKey, enc: "gzip", body: chatOK, wantStatus: 400, wantCode: "invalid_content_encoding"},
		{name: "gzip then garbage", key: testKey, enc: "gzip", body: compress(t, "gzip", []byte(chatOK)) + "junk", wantStatus: 400, wantCode: "invalid_content_encoding"},
		// Unauthenticated: 401, not 413 — the bomb is never inflated.
		{name: "bomb without key", enc: "gzip", body: bomb, wantStatus: 401, wantCode: "missing_api_key"},
		{name: "bomb with bad key", key: "sk-wrong", enc: "gzip", body: bomb, wantStatus: 401, wantCode: "invalid_api_key"},
		{name: "unknown encoding without key", enc: "br", body: chatOK, wantStatus: 401, wantCode: "missing_api_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "POST", "/v1/chat/completions", tc.key, tc.body, "Content-Encoding", tc.enc)
			body := readAll(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode != "" {
				if got := errorCode(t, body); got != tc.wantCode {
					t.Errorf("code %q, want %q", got, tc.wantCode)
				}
			}
		})
	}
	// The receipt's digest is of the decoded request: the same as for the
	// plain body.
	resp := h.do(t, "POST", "/v1/chat/completions", testKey, chatOK)
	readAll(t, resp)
	digest := func() [32]byte {
		c := *h.disp.lastTask()
		c.RequestID = "" // unique per request
		return c.Digest()
	}
	plain := digest()
	resp = h.do(t, "POST", "/v1/chat/completions", testKey, compress(t, "gzip", []byte(chatOK)), "Content-Encoding", "gzip")
	readAll(t, resp)
	if digest() != plain {
		t.Error("a gzipped request's digest differs from the plain one's")
	}
}

// TestEncodedAdminBodyRefused: admin and worker routes (readJSON) take no
// encoded bodies, rather than parse compressed bytes as JSON.
func TestEncodedAdminBodyRefused(t *testing.T) {
	var rc fasthttp.RequestCtx
	rc.Request.Header.Set("Content-Encoding", "gzip")
	rc.Request.SetBodyString(compress(t, "gzip", []byte(`{}`)))
	var v struct{}
	err := readJSON(&rc, &v)
	if ae := apierr.From(err); ae == nil || ae.Status != 415 {
		t.Errorf("readJSON of a gzip body: %v, want 415", err)
	}
}

func TestResponseCompression(t *testing.T) {
	h := newHarness(t, nil)
	big := `{"model":"tiny","input":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 200), ",") + `]}`
	for _, tc := range []struct {
		name, path, body, accept string
		stream, wantGzip         bool
	}{
		{name: "large json", path: "/v1/embeddings", body: big, accept: "gzip", wantGzip: true},
		{name: "large json, gzip among others", path: "/v1/embeddings", body: big, accept: "br;q=1.0, gzip;q=0.8, *;q=0.1", wantGzip: true},
		{name: "large json, star", path: "/v1/embeddings", body: big, accept: "*", wantGzip: true},
		{name: "large json, gzip refused", path: "/v1/embeddings", body: big, accept: "gzip;q=0, deflate"},
		{name: "large json, star refused", path: "/v1/embeddings", body: big, accept: "*;q=0"},
		{name: "large json, identity", path: "/v1/embeddings", body: big, accept: "identity"},
		{name: "small json", path: "/v1/chat/completions", body: chatOK, accept: "gzip"},
		{name: "stream", path: "/v1/chat/completions", body: `{"model":"tiny","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`, accept: "gzip", stream: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Setting Accept-Encoding ourselves stops net/http's
			// transparent decompression, so the wire is what we see.
			resp := h.do(t, "POST", tc.path, testKey, tc.body, "Accept-Encoding", tc.accept)
			raw := readAll(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, raw)
			}
			gz := resp.Header.Get("Content-Encoding") == "gzip"
			if gz != tc.wantGzip {
				t.Fatalf("Content-Encoding %q, want gzip %v", resp.Header.Get("Content-Encoding"), tc.wantGzip)
			}
			if tc.stream && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Errorf("stream Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if !gz {
				return
			}
			if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Accept-Encoding") {
				t.Errorf("Vary %q lacks Accept-Encoding", resp.Header.Values("Vary"))
			}
			r, err := gzip.NewReader(strings.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(r)
			if err != nil || !json.Valid(plain) || len(plain) < minCompressSize {
				t.Fatalf("gunzipped body (%v): %.200s", err, plain)
			}
		})
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "x-gzip": true, "deflate, gzip": true, "gzip;q=0": false,
		"gzip; q=0.001": true, "*": true, "*;q=0": false, "*, gzip;q=0": false, "gzip;q=0, *": false,
		"br": false, "gzip;q=bogus": false, "identity": false,
	} {
		if got := acceptsGzip(v); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", v, got, want)
		}
	}
}
