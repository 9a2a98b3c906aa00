package gateway

import (
	"encoding/json"
	"io"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/httpguard"
	"github.com/tollgate-ai/tollgate/internal/obs"
)

// registerSecrets tells the process's log redaction every credential the
// gateway was configured with.
func registerSecrets(cfg Config) {
	for _, k := range cfg.APIKeys {
		if secret, ok := plainSecret(k.Key); ok {
			obs.AddSecrets(secret)
		}
	}
	for _, k := range cfg.AdminKeys {
		if secret, ok := plainSecret(k); ok {
			obs.AddSecrets(secret)
		}
	}
}

// guardRefusal turns a request refused by httpguard (ambiguous framing)
// into the client's error, or nil when err is something else. fasthttp
// closes the connection after any transport error.
func guardRefusal(err error) *apierr.Error {
	g, ok := httpguard.IsRefusal(err)
	if !ok {
		return nil
	}
	code := "malformed_request"
	if g.Status == 431 {
		code = "request_header_too_large"
	}
	return &apierr.Error{Status: g.Status, Type: apierr.TypeInvalidRequest, Code: code,
		Message: "The HTTP request was refused: " + g.Reason + ".", Cause: err}
}

// onlyOneValue refuses anything but whitespace after the JSON value dec
// has just decoded (json.Decoder stops at the end of the first value).
func onlyOneValue(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return apierr.BadRequest("", "invalid_json", "We could not parse the JSON body of your request: unexpected data after the JSON value.")
	}
	return nil
}
