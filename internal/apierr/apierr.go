// Package apierr defines Tollgate's one error type: an HTTP status, an OpenAI
// error type/code/param, a client-facing message and the underlying cause.
// Every layer returns it (wrapped or not) as a plain error; the gateway renders
// it in OpenAI form in exactly one place.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// OpenAI error types.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeUnavailable    = "service_unavailable"
	TypeTimeout        = "timeout_error"
)

// Error is what a client sees of a failure. Message is safe to show to the
// client; Cause is for logs and is never rendered.
type Error struct {
	Status     int
	Type       string
	Code       string
	Param      string
	Message    string
	RetryAfter time.Duration // > 0 adds a Retry-After header
	Cause      error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Type, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// BadRequest is a 400 naming the offending parameter (may be empty).
func BadRequest(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unauthorized is a 401.
func Unauthorized(code, msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: code, Message: msg}
}

// Forbidden is a 403.
func Forbidden(code, msg string) *Error {
	return &Error{Status: http.StatusForbidden, Type: TypePermission, Code: code, Message: msg}
}

// NotFound is a 404.
func NotFound(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: param, Code: code, Message: fmt.Sprintf(format, args...)}
}

// TooLarge is a 413.
func TooLarge(limit int) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest, Code: "request_too_large",
		Message: fmt.Sprintf("request body exceeds the limit of %d bytes", limit)}
}

// RateLimited is a 429 with Retry-After.
func RateLimited(code, msg string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Type: TypeRateLimit, Code: code, Message: msg, RetryAfter: retryAfter}
}

// Unavailable is a 503 (no capable worker, draining, not ready).
func Unavailable(code, msg string, cause error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: code, Message: msg, Cause: cause}
}

// Timeout is a 504 (deadline passed).
func Timeout(code, msg string, cause error) *Error {
	return &Error{Status: http.StatusGatewayTimeout, Type: TypeTimeout, Code: code, Message: msg, Cause: cause}
}

// Internal is a 500 whose cause is logged, not shown.
func Internal(cause error) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Code: "internal_error", Message: "internal server error", Cause: cause}
}

// From returns the *Error in err's chain, or wraps err: a passed context
// deadline becomes a 504, anything else a 500.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout("deadline_exceeded", "the request's deadline passed", err)
	}
	return Internal(err)
}
