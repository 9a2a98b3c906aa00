package cors

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeOrigin(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "https://app.example.com", want: "https://app.example.com"},
		{in: "HTTPS://App.Example.COM", want: "https://app.example.com"},
		{in: "https://app.example.com:443", want: "https://app.example.com"},
		{in: "http://localhost:80", want: "http://localhost"},
		{in: "http://localhost:5173", want: "http://localhost:5173"},
		{in: "http://[::1]:3000", want: "http://[::1]:3000"},
		{in: "https://app.example.com/", bad: true},
		{in: "https://app.example.com/path", bad: true},
		{in: "https://app.example.com?x=1", bad: true},
		{in: "https://app.example.com#", bad: true},
		{in: "https://user@app.example.com", bad: true},
		{in: "https://*.example.com", bad: true},
		{in: "app.example.com", bad: true},
		{in: "null", bad: true},
		{in: "", bad: true},
		{in: "https://", bad: true},
		{in: "https://app.example.com:0", bad: true},
		{in: "https://app.example.com:99999", bad: true},
		{in: "mailto:someone@example.com", bad: true},
	} {
		got, err := NormalizeOrigin(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("NormalizeOrigin(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // substring of the error; "" for none
	}{
		{name: "off", c: Config{}},
		{name: "origins", c: Config{AllowedOrigins: []string{"https://a.example", "http://localhost:3000"}, AllowCredentials: true}},
		{name: "star", c: Config{AllowedOrigins: []string{"*"}}},
		{name: "star with credentials", c: Config{AllowedOrigins: []string{"*"}, AllowCredentials: true}, want: "allow_credentials"},
		{name: "star among others", c: Config{AllowedOrigins: []string{"https://a.example", "*"}}, want: "allowed_origins[1]"},
		{name: "path", c: Config{AllowedOrigins: []string{"https://a.example/app"}}, want: "allowed_origins[0]"},
		{name: "bare host", c: Config{AllowedOrigins: []string{"a.example"}}, want: "allowed_origins[0]"},
		{name: "null", c: Config{AllowedOrigins: []string{"null"}}, want: "allowed_origins[0]"},
		{name: "bad header", c: Config{AllowedOrigins: []string{"*"}, AllowedHeaders: []string{"X Bad"}}, want: "allowed_headers[0]"},
		{name: "negative max age", c: Config{AllowedOrigins: []string{"*"}, MaxAge: -time.Second}, want: "max_age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestAllowedAdversarial: only exact origins match; none of the look-alikes
// an attacker controls does.
func TestAllowedAdversarial(t *testing.T) {
	p, err := New(Config{AllowedOrigins: []string{"https://allowed.example", "http://localhost:5173"}})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"https://allowed.example":                   true,
		"https://ALLOWED.example":                   true,
		"http://localhost:5173":                     true,
		"https://allowed.example.evil.com":          false,
		"https://evil-allowed.example":              false,
		"https://evil.com/https://allowed.example":  false,
		"https://allowed.example/":                  false,
		"https://allowed.example:443":               false, // browsers never send the default port
		"https://allowed.example:8443":              false,
		"http://allowed.example":                    false,
		"https://sub.allowed.example":               false,
		"https://allowed.examplE.":                  false,
		" https://allowed.example":                  false,
		"https://allowed.example, https://evil.com": false,
		"null":                        false,
		"":                            false,
		"http://localhost:51730":      false,
		"http://localhost":            false,
		"https://allowed.example\x00": false,
	} {
		if got := p.Allowed(origin); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", origin, got, want)
		}
	}
	var off *Policy
	if off.Allowed("https://allowed.example") || off.Enabled() {
		t.Error("a nil policy allows")
	}
	if p, err := New(Config{}); p != nil || err != nil {
		t.Errorf("New(zero) = %v, %v; want nil, nil (off)", p, err)
	}
}

func TestPreflight(t *testing.T) {
	exact, _ := New(Config{AllowedOrigins: []string{"https://app.example"}, MaxAge: time.Hour})
	creds, _ := New(Config{AllowedOrigins: []string{"https://app.example"}, AllowCredentials: true, AllowedHeaders: []string{"X-Custom"}})
	star, _ := New(Config{AllowedOrigins: []string{"*"}})
	vary := "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
	for _, tc := range []struct {
		name           string
		p              *Policy
		origin, reqHdr string
		ok             bool
		want           http.Header
	}{
		{name: "allowed", p: exact, origin: "https://app.example",
			reqHdr: "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization",
			ok:     true, want: http.Header{
				"Vary": {vary}, "Access-Control-Allow-Origin": {"https://app.example"},
				"Access-Control-Allow-Methods": {Methods}, "Access-Control-Max-Age": {"3600"},
				"Access-Control-Allow-Headers": {"authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization"},
			}},
		{name: "unlisted header left out", p: exact, origin: "https://app.example", reqHdr: "Authorization, X-Evil, cookie",
			ok: true, want: http.Header{
				"Vary": {vary}, "Access-Control-Allow-Origin": {"https://app.example"},
				"Access-Control-Allow-Methods": {Methods}, "Access-Control-Max-Age": {"3600"},
				"Access-Control-Allow-Headers": {"authorization"},
			}},
		{name: "credentials and extra header", p: creds, origin: "https://app.example", reqHdr: "x-custom",
			ok: true, want: http.Header{
				"Vary": {vary}, "Access-Control-Allow-Origin": {"https://app.example"}, "Access-Control-Allow-Credentials": {"true"},
				"Access-Control-Allow-Methods": {Methods}, "Access-Control-Max-Age": {"600"},
				"Access-Control-Allow-Headers": {"x-custom"},
			}},
		{name: "star never reflects, never credentials", p: star, origin: "https://anything.example", reqHdr: "authorization",
			ok: true, want: http.Header{
				"Vary": {vary}, "Access-Control-Allow-Origin": {"*"},
				"Access-Control-Allow-Methods": {Methods}, "Access-Control-Max-Age": {"600"},
				"Access-Control-Allow-Headers": {"authorization"},
			}},
		{name: "look-alike origin leaks nothing", p: creds, origin: "https://app.example.evil.com", reqHdr: "authorization",
			want: http.Header{"Vary": {vary}}},
		{name: "null origin leaks nothing", p: exact, origin: "null", reqHdr: "authorization",
			want: http.Header{"Vary": {vary}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if ok := tc.p.Preflight(h, tc.origin, tc.reqHdr); ok != tc.ok {
				t.Errorf("Preflight = %v, want %v", ok, tc.ok)
			}
			if d := cmp.Diff(h, tc.want); d != "" {
				t.Errorf("headers (-got +want):\n%s", d)
			}
		})
	}
	if got := exact.Refused("Authorization, X-Evil, x-stainless-os"); got != "x-evil" {
		t.Errorf("Refused = %q, want x-evil", got)
	}
}

func TestActual(t *testing.T) {
	exact, _ := New(Config{AllowedOrigins: []string{"https://app.example"}})
	star, _ := New(Config{AllowedOrigins: []string{"*"}})
	expose := strings.Join(ExposedHeaders, ", ")
	for _, tc := range []struct {
		name   string
		p      *Policy
		origin string
		want   http.Header
	}{
		{name: "allowed", p: exact, origin: "https://app.example", want: http.Header{
			"Vary": {"Origin"}, "Access-Control-Allow-Origin": {"https://app.example"}, "Access-Control-Expose-Headers": {expose}}},
		{name: "star", p: star, origin: "null", want: http.Header{
			"Vary": {"Origin"}, "Access-Control-Allow-Origin": {"*"}, "Access-Control-Expose-Headers": {expose}}},
		{name: "disallowed", p: exact, origin: "https://app.example.evil.com", want: http.Header{"Vary": {"Origin"}}},
		{name: "no origin", p: exact, want: http.Header{"Vary": {"Origin"}}},
		{name: "off", p: nil, origin: "https://app.example", want: http.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			tc.p.Actual(h, tc.origin)
			if d := cmp.Diff(h, tc.want); d != "" {
				t.Errorf("headers (-got +want):\n%s", d)
			}
		})
	}
}

func FuzzAllowed(f *testing.F) {
	for _, s := range []string{"https://app.example", "https://app.example.evil.com", "null", "https://APP.example"} {
		f.Add(s)
	}
	p, _ := New(Config{AllowedOrigins: []string{"https://app.example"}})
	f.Fuzz(func(t *testing.T, origin string) {
		if p.Allowed(origin) && !strings.EqualFold(origin, "https://app.example") {
			t.Fatalf("Allowed(%q)", origin)
		}
	})
}
