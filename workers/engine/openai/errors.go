package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// upstreamError is what an upstream said about a failure, from any of the
// error bodies OpenAI-compatible servers send.
type upstreamError struct {
	Message string
	Type    string
	Code    string // only string codes; vLLM's numeric codes are dropped
	Param   string
}

// maxMessageBytes bounds an upstream message passed on to a client.
const maxMessageBytes = 1024

// parseErrorBody reads an upstream error body. It understands
//
//	{"error":{"message":..,"type":..,"param":..,"code":..}}   OpenAI, vLLM, SGLang
//	{"error":"message"}                                        llama.cpp, Ollama
//	{"object":"error","message":..,"type":..,"code":..}        older vLLM
//	{"detail":"message"}                                       FastAPI defaults
//
// and falls back to the body as text.
func parseErrorBody(raw []byte) upstreamError {
	var top struct {
		Error   json.RawMessage `json:"error"`
		Message json.RawMessage `json:"message"`
		Type    json.RawMessage `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
		Detail  json.RawMessage `json:"detail"`
	}
	var u upstreamError
	if err := json.Unmarshal(raw, &top); err != nil {
		u.Message = string(bytes.TrimSpace(raw))
		return u.clean()
	}
	if len(top.Error) > 0 && top.Error[0] == '{' {
		var inner struct {
			Message json.RawMessage `json:"message"`
			Type    json.RawMessage `json:"type"`
			Param   json.RawMessage `json:"param"`
			Code    json.RawMessage `json:"code"`
		}
		if json.Unmarshal(top.Error, &inner) == nil {
			top.Message, top.Type, top.Param, top.Code = inner.Message, inner.Type, inner.Param, inner.Code
		}
	} else if jsonString(top.Error) != "" {
		top.Message = top.Error
	}
	u.Message = jsonString(top.Message)
	if u.Message == "" {
		u.Message = jsonString(top.Detail)
	}
	u.Type, u.Param, u.Code = jsonString(top.Type), jsonString(top.Param), jsonString(top.Code)
	return u.clean()
}

// jsonString is raw as a string if it is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// clean bounds every field and drops invalid UTF-8, so an upstream cannot
// push arbitrary bytes into a client's error body.
func (u upstreamError) clean() upstreamError {
	trim := func(s string, n int) string {
		s = strings.ToValidUTF8(s, "")
		if len(s) <= n {
			return s
		}
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "…"
	}
	u.Message = trim(u.Message, maxMessageBytes)
	u.Type, u.Code, u.Param = trim(u.Type, 64), trim(u.Code, 64), trim(u.Param, 64)
	return u
}

// openAITypes are the error types a client expects; others (vLLM's
// "BadRequestError" and the like) are replaced by the type for the status.
var openAITypes = map[string]bool{
	apierr.TypeInvalidRequest: true, apierr.TypeAuthentication: true, apierr.TypePermission: true,
	apierr.TypeNotFound: true, apierr.TypeRateLimit: true, apierr.TypeServer: true,
	apierr.TypeUnavailable: true, apierr.TypeTimeout: true,
}

// statusError maps a non-200 upstream response to what the client sees.
func statusError(status int, retryAfterValue string, raw []byte) *apierr.Error {
	u := parseErrorBody(raw)
	cause := fmt.Errorf("upstream status %d: %s", status, u.Message)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// The worker's own credentials were refused: the client's request is
		// not at fault, and the client must not be told to fix its key.
		return upstreamFailure("the upstream inference server refused the worker's credentials", cause)
	case status == http.StatusTooManyRequests:
		msg := u.Message
		if msg == "" {
			msg = "the upstream inference server is overloaded"
		}
		code := u.Code
		if code == "" {
			code = "upstream_rate_limited"
		}
		return apierr.RateLimited(code, msg, retryAfter(retryAfterValue))
	case status >= 400 && status < 500:
		e := &apierr.Error{Status: status, Type: u.Type, Code: u.Code, Param: u.Param, Message: u.Message, Cause: cause}
		if !openAITypes[e.Type] {
			e.Type = apierr.TypeInvalidRequest
		}
		if e.Message == "" {
			e.Message = strings.ToLower(http.StatusText(status))
		}
		return e
	case status == http.StatusServiceUnavailable:
		return apierr.Unavailable("upstream_error", "the upstream inference server is unavailable", cause)
	case status == http.StatusGatewayTimeout:
		return apierr.Timeout("upstream_timeout", "the upstream inference server timed out", cause)
	}
	return upstreamFailure(fmt.Sprintf("the upstream inference server failed (status %d)", status), cause)
}

// streamEventError maps an error sent as a stream event (vLLM sends
// `data: {"error": {...}}` when generation fails after the headers). Its
// numeric code, when there is one, is taken as the status.
func streamEventError(raw json.RawMessage) *apierr.Error {
	status := http.StatusInternalServerError
	var withCode struct {
		Code json.Number `json:"code"`
	}
	if json.Unmarshal(raw, &withCode) == nil {
		if n, err := strconv.Atoi(withCode.Code.String()); err == nil && n >= 400 && n <= 599 {
			status = n
		}
	}
	body, _ := json.Marshal(map[string]json.RawMessage{"error": raw})
	return statusError(status, "", body)
}

// streamErrorReport maps the data of an error event (`event: error`, or
// llama.cpp's `error:` line): an error object, bare (llama.cpp's
// {"code": 400, "message": ..., "type": ...}) or wrapped in {"error": ...}.
func streamErrorReport(data []byte) *apierr.Error {
	raw := json.RawMessage(append([]byte(nil), data...))
	var wrapped struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(raw, &wrapped) == nil && len(wrapped.Error) > 0 && wrapped.Error[0] == '{' {
		raw = wrapped.Error
	}
	if !json.Valid(raw) {
		// Not JSON: the text is the message.
		raw, _ = json.Marshal(map[string]string{"message": string(data)})
	}
	return streamEventError(raw)
}

// retryAfter parses a Retry-After header in seconds; unparsable or absent
// gives one second, so a client always gets a hint.
func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n < 3600 {
		return time.Duration(n) * time.Second
	}
	return time.Second
}
