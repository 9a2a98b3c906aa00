package gateway

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/valyala/fasthttp"
)

// Request bodies may come compressed (Content-Encoding gzip or deflate;
// some SDKs and proxies compress large prompts). An inference body is
// decoded only once its API key has been checked, so an unauthenticated
// caller spends no decompression CPU, and it is bounded after
// decompression by the same Config.BodyLimit as a plain body: a small
// compressed body that inflates past it (a decompression bomb) is 413
// after at most BodyLimit+1 bytes have been inflated. An encoding other
// than gzip, deflate or identity is 415; a body that does not decode is
// 400. Only one encoding is applied (a list such as "gzip, gzip" is 415).

func errUnsupportedEncoding(enc string) *apierr.Error {
	return &apierr.Error{Status: http.StatusUnsupportedMediaType, Type: apierr.TypeInvalidRequest,
		Code:    "unsupported_content_encoding",
		Message: "Content-Encoding " + quoteHeader(enc) + " is not supported: send the body as identity, gzip or deflate."}
}

// quoteHeader quotes a client's header value for an error message, cut
// short and with anything but printable ASCII replaced.
func quoteHeader(v string) string {
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' {
			return '?'
		}
		return r
	}, v) + `"`
}

// requestBody is an inference request's body, decoded per its
// Content-Encoding. Call it only after authenticating.
func (s *Server) requestBody(rc *fasthttp.RequestCtx) ([]byte, error) {
	return decodeBody(string(rc.Request.Header.ContentEncoding()), rc.PostBody(), s.cfg.BodyLimit)
}

// decodeBody decodes body as enc says, refusing a result over limit bytes.
func decodeBody(enc string, body []byte, limit int) ([]byte, error) {
	var open func(io.Reader) (io.Reader, error)
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case "deflate":
		open = openDeflate(body)
	default:
		return nil, errUnsupportedEncoding(enc)
	}
	r, err := open(bytes.NewReader(body))
	if err != nil {
		return nil, errCorruptBody(enc, err)
	}
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(r, int64(limit)+1))
	switch {
	case n > int64(limit):
		return nil, apierr.TooLarge(limit)
	case err != nil:
		return nil, errCorruptBody(enc, err)
	}
	return out.Bytes(), nil
}

// openDeflate reads HTTP's "deflate", which RFC 9110 defines as the zlib
// format (RFC 1950) but which some clients send as a raw DEFLATE stream
// (RFC 1951): a valid zlib header (CMF/FLG check bits, method 8) picks
// zlib, anything else raw.
func openDeflate(body []byte) func(io.Reader) (io.Reader, error) {
	if len(body) >= 2 && body[0]&0x0f == 8 && (uint16(body[0])<<8|uint16(body[1]))%31 == 0 {
		return func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) }
	}
	return func(r io.Reader) (io.Reader, error) { return flate.NewReader(r), nil }
}

func errCorruptBody(enc string, err error) *apierr.Error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("truncated")
	}
	return &apierr.Error{Status: http.StatusBadRequest, Type: apierr.TypeInvalidRequest, Code: "invalid_content_encoding",
		Message: "The request body could not be decoded as Content-Encoding " + quoteHeader(enc) + ".", Cause: err}
}

// refuseEncodedBody is for routes whose bodies are small and strict (admin
// and worker routes): an encoded body is 415, not parsed as if it were
// plain JSON.
func refuseEncodedBody(rc *fasthttp.RequestCtx) error {
	switch enc := string(rc.Request.Header.ContentEncoding()); strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return nil
	default:
		e := errUnsupportedEncoding(enc)
		e.Message = "Content-Encoding " + quoteHeader(enc) + " is not supported on this route: send the body uncompressed."
		return e
	}
}
