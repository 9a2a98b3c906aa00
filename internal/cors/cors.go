// Package cors decides which web pages on other origins may call the API
// from a browser (the Fetch standard's CORS protocol): it answers
// preflights and names the headers an allowed origin's actual responses
// carry. Matching is exact: an origin is allowed only when it equals a
// configured one ("scheme://host[:port]", normalised) or when the
// configuration is "*", so "https://app.example.com.evil.net", an origin
// with a different port or scheme, or the opaque "null" origin never
// match a configured https://app.example.com. It knows nothing of HTTP
// servers: headers are written through the two-method Header interface.
package cors

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is one deployment's CORS policy. The zero value (no origins) is
// off: no CORS header is ever sent and preflights are not answered.
type Config struct {
	// AllowedOrigins are exact origins ("https://app.example.com",
	// "http://localhost:5173") or the single entry "*" (any origin).
	AllowedOrigins []string
	// AllowedHeaders are request headers a page may send beyond the
	// built-in list (DefaultHeaders and any "x-stainless-*" header).
	AllowedHeaders []string
	// AllowCredentials lets pages send cookies and read responses to
	// credentialed requests. Tollgate authenticates with bearer keys, so
	// pages need not; it cannot go with "*".
	AllowCredentials bool
	// MaxAge is how long a browser may cache a preflight's answer
	// (default 10m; browsers cap it, Chromium at 2h).
	MaxAge time.Duration
}

// DefaultMaxAge is Config.MaxAge's default.
const DefaultMaxAge = 10 * time.Minute

// DefaultHeaders are the request headers every allowed page may send:
// what the OpenAI SDKs (openai-node and the Stainless family, whose
// x-stainless-* headers are allowed by prefix), LangChain and the Vercel
// AI SDK set, plus the gateway's own X-Request-Id and W3C trace context.
var DefaultHeaders = []string{
	"Authorization", "Content-Type", "Content-Encoding", "Accept", "Accept-Language",
	"OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "Idempotency-Key",
	"X-Request-Id", "traceparent", "tracestate", "baggage",
}

// allowedHeaderPrefix admits the Stainless SDK headers
// (x-stainless-os, -lang, -arch, -runtime, -retry-count, -timeout, …),
// which grow with each SDK release.
const allowedHeaderPrefix = "x-stainless-"

// ExposedHeaders are the response headers a page's script may read.
var ExposedHeaders = []string{
	"X-Tollgate-Receipt", "X-Request-Id", "Retry-After",
	"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
	"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
}

// Methods are the methods a preflight allows.
const Methods = "GET, HEAD, POST, DELETE"

// Validate names the first bad field.
func (c Config) Validate() error {
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			if len(c.AllowedOrigins) > 1 {
				return fmt.Errorf("allowed_origins[%d]: \"*\" allows every origin and must be the only entry", i)
			}
			if c.AllowCredentials {
				return errors.New("allow_credentials: cannot be true with allowed_origins \"*\" (browsers refuse it, and it would hand every site the user's credentials)")
			}
			continue
		}
		if _, err := NormalizeOrigin(o); err != nil {
			return fmt.Errorf("allowed_origins[%d]: %w", i, err)
		}
	}
	for i, h := range c.AllowedHeaders {
		if !validToken(h) {
			return fmt.Errorf("allowed_headers[%d]: %q is not a header name", i, h)
		}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("max_age: %s is negative", c.MaxAge)
	}
	return nil
}

// NormalizeOrigin checks that o is an origin, scheme://host[:port] and
// nothing else (no path, query, fragment or user), and returns it as a
// browser serialises it in the Origin header: scheme and host in lower
// case, the scheme's default port dropped.
func NormalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return "", fmt.Errorf("%q is not an origin: %w", o, err)
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("%q is not an origin: want scheme://host[:port] or \"*\"", o)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.HasSuffix(o, "#"):
		return "", fmt.Errorf("%q is not an origin: only scheme://host[:port], no path, query, fragment or user", o)
	case strings.Contains(u.Host, "*"):
		return "", fmt.Errorf("%q: wildcards inside an origin are not supported (list each origin, or \"*\" alone)", o)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return "", fmt.Errorf("%q is not an origin: empty host", o)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q: port %q is not in 1-65535", o, port)
		}
		port = strconv.Itoa(n)
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// validToken reports whether s is an HTTP token (RFC 9110), which a header
// name is.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// Header is where the policy writes: satisfied by *fasthttp.ResponseHeader
// and net/http's Header.
type Header interface {
	Set(key, value string)
	Add(key, value string)
}

// Policy is a validated Config. A nil *Policy is off.
type Policy struct {
	any         bool
	origins     map[string]bool
	headers     map[string]bool // lower case
	credentials bool
	maxAge      string
	expose      string
}

// New validates c; it returns nil (off) when c allows no origin.
func New(c Config) (*Policy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(c.AllowedOrigins) == 0 {
		return nil, nil
	}
	p := &Policy{origins: map[string]bool{}, headers: map[string]bool{}, credentials: c.AllowCredentials,
		expose: strings.Join(ExposedHeaders, ", ")}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			p.any = true
			continue
		}
		n, _ := NormalizeOrigin(o) // validated
		p.origins[n] = true
	}
	for _, h := range append(append([]string(nil), DefaultHeaders...), c.AllowedHeaders...) {
		p.headers[strings.ToLower(h)] = true
	}
	maxAge := c.MaxAge
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	p.maxAge = strconv.Itoa(int(maxAge / time.Second))
	return p, nil
}

// Enabled reports whether the policy allows any origin.
func (p *Policy) Enabled() bool { return p != nil }

// Allowed reports whether a page of origin (the Origin header's value,
// exactly as received) may read responses. The comparison is exact after
// lower-casing: browsers send the serialised origin, and anything else
// (extra spaces, a trailing slash, a path) is not one.
func (p *Policy) Allowed(origin string) bool {
	if p == nil || origin == "" {
		return false
	}
	if p.any {
		return true
	}
	return p.origins[strings.ToLower(origin)]
}

// IsPreflight reports whether a request is a CORS preflight: OPTIONS with
// Origin and Access-Control-Request-Method.
func IsPreflight(method, origin, requestMethod string) bool {
	return method == "OPTIONS" && origin != "" && requestMethod != ""
}

// Preflight writes the answer to an allowed origin's preflight into h and
// returns true, or writes only Vary and returns false for an origin that
// is not allowed (the caller answers 403 with no CORS header, so the
// browser blocks the request). requestHeaders is the
// Access-Control-Request-Headers value: the requested headers on the
// allow-list are echoed (lower case); one that is not is left out, and the
// browser then refuses the request, naming it in its console.
func (p *Policy) Preflight(h Header, origin, requestHeaders string) bool {
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	if !p.Allowed(origin) {
		return false
	}
	p.allowOrigin(h, origin)
	h.Set("Access-Control-Allow-Methods", Methods)
	if allowed := p.allowedHeaders(requestHeaders); allowed != "" {
		h.Set("Access-Control-Allow-Headers", allowed)
	}
	h.Set("Access-Control-Max-Age", p.maxAge)
	return true
}

// Refused lists the requested headers a preflight leaves out, for a log
// line; "" when none.
func (p *Policy) Refused(requestHeaders string) string {
	var out []string
	for _, name := range splitList(requestHeaders) {
		if !p.headerAllowed(name) {
			out = append(out, name)
		}
	}
	return strings.Join(out, ", ")
}

// Actual writes the headers of an actual (not preflight) response to a
// request from origin: Vary always (a cache must not serve one origin's
// answer to another), and for an allowed origin Allow-Origin, Expose-Headers
// and, if configured, Allow-Credentials.
func (p *Policy) Actual(h Header, origin string) {
	if p == nil {
		return
	}
	h.Add("Vary", "Origin")
	if !p.Allowed(origin) {
		return
	}
	p.allowOrigin(h, origin)
	h.Set("Access-Control-Expose-Headers", p.expose)
}

// allowOrigin names the origin: "*" under a wildcard policy (which never
// has credentials), else the request's own origin, never a list.
func (p *Policy) allowOrigin(h Header, origin string) {
	if p.any {
		h.Set("Access-Control-Allow-Origin", "*")
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if p.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
}

func (p *Policy) headerAllowed(name string) bool {
	return p.headers[name] || strings.HasPrefix(name, allowedHeaderPrefix) && validToken(name)
}

func (p *Policy) allowedHeaders(requested string) string {
	var b strings.Builder
	for _, name := range splitList(requested) {
		if !p.headerAllowed(name) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(name)
	}
	return b.String()
}

// splitList splits a comma-separated header list into lower-case names,
// dropping empty elements; at most 64, so a hostile list costs little.
func splitList(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		if len(out) == 64 {
			break
		}
		if name := strings.ToLower(strings.TrimSpace(part)); name != "" {
			out = append(out, name)
		}
	}
	return out
}
