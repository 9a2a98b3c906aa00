package gateway

import (
	"bytes"
	"context"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/cors"
	"github.com/valyala/fasthttp"
)

// What browsers and other HTTP clients expect beyond the OpenAI routes:
// CORS (Config.CORS; off by default) and compressed JSON answers.

// isPreflight reports whether the request is a CORS preflight the policy
// answers (with CORS off, OPTIONS stays a 405 like any unrouted method).
func (s *Server) isPreflight(rc *fasthttp.RequestCtx) bool {
	return s.cors.Enabled() && cors.IsPreflight(string(rc.Method()), string(rc.Request.Header.Peek("Origin")),
		string(rc.Request.Header.Peek("Access-Control-Request-Method")))
}

var errOriginNotAllowed = apierr.Forbidden("origin_not_allowed",
	"This origin may not call the API from a browser: the gateway's CORS configuration does not list it.")

// preflight answers a CORS preflight: 204 with the allow headers for an
// allowed origin, 403 in OpenAI form with no CORS header (so the browser
// blocks the actual request) for any other. It needs no API key: browsers
// never send credentials on a preflight. An unknown path is 404.
func (s *Server) preflight(ctx context.Context, rc *fasthttp.RequestCtx, reqID, path string) error {
	if allowFor(path) == "" {
		return apierr.NotFound("", "unknown_url", "Unknown request URL: OPTIONS %s.", path)
	}
	origin := string(rc.Request.Header.Peek("Origin"))
	requested := string(rc.Request.Header.Peek("Access-Control-Request-Headers"))
	if !s.cors.Preflight(&rc.Response.Header, origin, requested) {
		return errOriginNotAllowed
	}
	if refused := s.cors.Refused(requested); refused != "" {
		s.log.DebugContext(ctx, "cors preflight: headers not allowed", "request_id", reqID, "headers", refused)
	}
	rc.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

// decorate adds what every answer carries once the route has written it,
// errors and streams included: CORS headers for an allowed origin (not on
// a preflight, which preflight wrote), and gzip for a large JSON body a
// client accepts compressed.
func (s *Server) decorate(rc *fasthttp.RequestCtx) {
	if s.cors.Enabled() && !rc.IsOptions() {
		s.cors.Actual(&rc.Response.Header, string(rc.Request.Header.Peek("Origin")))
	}
	compressResponse(rc)
}

// minCompressSize is the smallest body worth compressing: below it gzip's
// 18-byte frame and the CPU outweigh the bytes saved.
const minCompressSize = 1024

// compressResponse gzips a JSON body of at least minCompressSize bytes
// when the request accepts gzip. Streams (SSE) are never compressed: a
// compressor buffers, and each token must reach the client as it comes.
// HEAD answers are left alone (their length is the plain body's).
func compressResponse(rc *fasthttp.RequestCtx) {
	r := &rc.Response
	if r.IsBodyStream() || rc.IsHead() || len(r.Header.ContentEncoding()) > 0 || len(r.Body()) < minCompressSize ||
		!bytes.HasPrefix(r.Header.ContentType(), []byte("application/json")) {
		return
	}
	if !acceptsGzip(string(rc.Request.Header.Peek(fasthttp.HeaderAcceptEncoding))) {
		return
	}
	body := fasthttp.AppendGzipBytesLevel(nil, r.Body(), fasthttp.CompressBestSpeed)
	r.SetBodyRaw(body)
	r.Header.SetContentEncoding("gzip")
	r.Header.Add(fasthttp.HeaderVary, fasthttp.HeaderAcceptEncoding)
}

// acceptsGzip reads Accept-Encoding (RFC 9110 §12.5.3): gzip (or x-gzip,
// or *) with a quality above zero. "gzip;q=0" refuses it, and so does
// "*;q=0" without a gzip entry of its own.
func acceptsGzip(v string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, part := range strings.Split(v, ",") {
		name, params, _ := strings.Cut(part, ";")
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil || f < 0 || f > 1 {
					f = 0
				}
				q = f
			}
		}
		switch name = strings.ToLower(strings.TrimSpace(name)); name {
		case "gzip", "x-gzip":
			gzipQ = max(gzipQ, q)
		case "*":
			starQ = max(starQ, q)
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}
