package gateway

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/ratelimit"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/valyala/fasthttp"
)

// Per-key limits. Requests per minute are exact: each admitted request
// takes one unit from the key's "req:" bucket, atomically, before it is
// dispatched. Tokens per minute cannot be known before a request ends (the
// worker counts them), so they are charged afterwards: a request is
// admitted while the key's "tok:" bucket is not in debt, and its actual
// prompt + completion tokens are debited when it completes. Over any window
// a key uses at most its budget plus what its requests in flight at the
// moment the budget ran out use; it then waits for the debt to refill.
// Refused requests spend nothing.

// keyLimiters builds a key's limiters from its rates.
func (s *Server) keyLimiters(k *APIKey) error {
	var err error
	if k.RequestsPerMinute < 0 || k.TokensPerMinute < 0 {
		return fmt.Errorf("gateway: api key %q: negative rate limit", k.ID)
	}
	if k.RequestsPerMinute > 0 {
		if k.requests, err = s.deps.RateLimiter(ratelimit.PerMinute(k.RequestsPerMinute)); err != nil {
			return fmt.Errorf("gateway: api key %q: %w", k.ID, err)
		}
	}
	if k.TokensPerMinute > 0 {
		if k.tokens, err = s.deps.RateLimiter(ratelimit.PerMinute(k.TokensPerMinute)); err != nil {
			return fmt.Errorf("gateway: api key %q: %w", k.ID, err)
		}
	}
	return nil
}

// limiterTimeout bounds one limiter call (a Redis round trip).
const limiterTimeout = 2 * time.Second

// admit applies the key's limits to one request: 429 with Retry-After when
// either is spent. Each limit it consults is reported in h as OpenAI's
// x-ratelimit-* headers (see rateHeaders), on the answer and on a 429.
// The token check comes first because it spends nothing, so a request
// refused for tokens does not use up a request unit. A limiter that
// fails (not an outage, which ratelimit.Fallback absorbs) is logged and lets the request through: limits protect capacity, and an
// unexpected limiter error must not take the API down.
func (s *Server) admit(ctx context.Context, k *APIKey, reqID string, h *fasthttp.ResponseHeader) error {
	if k.requests == nil && k.tokens == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, limiterTimeout)
	defer cancel()
	now := s.clock.Now()
	if k.tokens != nil {
		d, err := k.tokens.Allow(ctx, "tok:"+k.ID, 0, now)
		if err == nil {
			rateHeaders(h, "tokens", ratelimit.PerMinute(k.TokensPerMinute), d)
		}
		switch {
		case err != nil:
			s.log.WarnContext(ctx, "token limiter failed; request admitted", "request_id", reqID, "err", err)
		case !d.Allowed:
			return apierr.RateLimited("rate_limit_exceeded", fmt.Sprintf(
				"Rate limit reached for tokens per minute (TPM) on key %s: limit %d. Please try again in %s.",
				k.ID, k.TokensPerMinute, d.RetryAfter.Round(time.Millisecond)), d.RetryAfter)
		}
	}
	if k.requests != nil {
		d, err := k.requests.Allow(ctx, "req:"+k.ID, 1, now)
		if err == nil {
			rateHeaders(h, "requests", ratelimit.PerMinute(k.RequestsPerMinute), d)
		}
		switch {
		case err != nil:
			s.log.WarnContext(ctx, "request limiter failed; request admitted", "request_id", reqID, "err", err)
		case !d.Allowed:
			return apierr.RateLimited("rate_limit_exceeded", fmt.Sprintf(
				"Rate limit reached for requests per minute (RPM) on key %s: limit %d. Please try again in %s.",
				k.ID, k.RequestsPerMinute, d.RetryAfter.Round(time.Millisecond)), d.RetryAfter)
		}
	}
	return nil
}

// rateHeaderNames are the x-ratelimit-* headers, kept on an error answer
// (writeError) like the receipt.
var rateHeaderNames = []string{
	"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
	"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
}

// rateHeaders writes one limit's headers as OpenAI sends them:
// x-ratelimit-limit-<unit> the budget per minute, -remaining-<unit> what is
// left after this request (0 while a token budget is in debt), and
// -reset-<unit> how long until the bucket is full again, as a Go duration
// ("1s", "6m0s", "250ms"; what OpenAI's headers look like). With a token
// bucket the budget refills continuously, so "reset" is the time to a full
// bucket, not to a fixed window's end.
func rateHeaders(h *fasthttp.ResponseHeader, unit string, r ratelimit.Rate, d ratelimit.Decision) {
	remaining := max(d.Remaining, 0)
	missing := r.Limit - d.Remaining // the debt counts: it refills first
	reset := time.Duration(0)
	if missing > 0 {
		reset = time.Duration(math.Ceil(float64(missing) * float64(r.Period) / float64(r.Limit)))
	}
	h.Set("x-ratelimit-limit-"+unit, strconv.FormatInt(r.Limit, 10))
	h.Set("x-ratelimit-remaining-"+unit, strconv.FormatInt(min(remaining, r.Limit), 10))
	h.Set("x-ratelimit-reset-"+unit, reset.Round(time.Millisecond).String())
}

// charge debits a completed request's tokens from its key's budget.
func (s *Server) charge(ctx context.Context, k *APIKey, reqID string, u *task.Usage) {
	if k == nil || k.tokens == nil || u == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limiterTimeout)
	defer cancel()
	n := int64(max(u.PromptTokens, 0)) + int64(max(u.CompletionTokens, 0))
	if err := k.tokens.Debit(ctx, "tok:"+k.ID, n, s.clock.Now()); err != nil {
		s.log.WarnContext(ctx, "token limiter: charge failed", "request_id", reqID, "tokens", n, "err", err)
	}
}
