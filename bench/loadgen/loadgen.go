// Package loadgen is an open-loop HTTP load generator on fasthttp for
// loopback benchmarks.
//
// Open loop: every request's send time is fixed up front by the arrival
// schedule (constant rate or Poisson), and its latency is measured from that
// scheduled time, not from when it was actually sent. A server that falls
// behind therefore shows its queueing in the numbers instead of slowing the
// generator down (no coordinated omission). Concurrency is bounded: a request
// that comes due while MaxInFlight requests are outstanding is not sent and
// is counted as an "overload" error, so the generator never waits on the
// server either.
//
// Latencies go into HDR histograms (microseconds, 3 significant digits).
// Streaming requests (SSE) also record time to first token: the arrival of
// the first `data:` line, again from the scheduled time. A run stops by
// itself after its schedule (Duration at Rate, or Requests) has been sent and
// every request has ended or timed out.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Arrival is the shape of the request schedule.
type Arrival string

// Arrival schedules.
const (
	Constant Arrival = "constant" // evenly spaced, 1/Rate apart
	Poisson  Arrival = "poisson"  // exponential gaps with mean 1/Rate, seeded
)

// Error classes counted in Result.Errors besides "http_<status>".
const (
	ErrOverload  = "overload"  // MaxInFlight reached when the request came due; not sent
	ErrTimeout   = "timeout"   // no response, or a stalled stream, within Timeout
	ErrConn      = "conn"      // connection refused, reset or closed
	ErrTruncated = "truncated" // a stream ended without data: [DONE]
)

// Histogram bounds, in microseconds.
const (
	histMin = 1
	histMax = 600_000_000 // 10 min
)

// Config describes one run.
type Config struct {
	// URL is the target; its host must be a loopback address (127.0.0.0/8,
	// ::1 or localhost) unless Dial is set.
	URL string
	// Method defaults to POST when Body is set, else GET.
	Method string
	Body   []byte
	// Header holds extra request headers (Authorization, Content-Type ...).
	Header map[string]string
	// Stream reads each response as SSE and records TTFT.
	Stream bool

	// Rate is the mean arrival rate in requests per second.
	Rate float64
	// Duration is the schedule's length; Requests caps its count. At least
	// one is required; with both, the schedule ends at whichever comes first.
	Duration time.Duration
	Requests int
	Arrival  Arrival // default Constant
	Seed     uint64  // Poisson seed

	// MaxInFlight bounds outstanding requests (default 1024).
	MaxInFlight int
	// Timeout bounds waiting for a response and, when streaming, each gap
	// between reads (default 10s).
	Timeout time.Duration
	// Dial replaces the TCP dialer (e.g. an in-memory listener in tests).
	Dial func(addr string) (net.Conn, error)
	// TLS, when set, speaks HTTPS with it (the URL's scheme must be https).
	TLS *tls.Config
	// Progress, when set, is called about twice a second with the counts so
	// far, from a goroutine of the run.
	Progress func(p Progress)
}

// Progress is a run's state at one moment.
type Progress struct {
	Scheduled, Sent, Done int
}

// Validate checks cfg and names the first bad field.
func (c *Config) Validate() error {
	u, err := url.Parse(c.URL)
	want := "http"
	if c.TLS != nil {
		want = "https"
	}
	if err != nil || u.Scheme != want || u.Host == "" {
		return fmt.Errorf("url: %q is not an %s URL", c.URL, want)
	}
	if c.Dial == nil && !loopback(u.Hostname()) {
		return fmt.Errorf("url: %q is not a loopback address; loadgen only targets this machine", u.Hostname())
	}
	switch {
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0) || c.Rate > 1e6:
		return fmt.Errorf("rate: %v is outside (0, 1e6]", c.Rate)
	case c.Duration < 0 || c.Requests < 0:
		return errors.New("duration, requests: negative")
	case c.Duration == 0 && c.Requests == 0:
		return errors.New("duration, requests: one of them is required")
	case c.Arrival != "" && c.Arrival != Constant && c.Arrival != Poisson:
		return fmt.Errorf("arrival: %q is not constant or poisson", c.Arrival)
	case c.MaxInFlight < 0:
		return errors.New("max_in_flight: negative")
	case c.Timeout < 0:
		return errors.New("timeout: negative")
	}
	if n := c.scheduleLen(); n > 50_000_000 {
		return fmt.Errorf("duration × rate: %d requests is too many for one run", n)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) scheduleLen() int {
	n := c.Requests
	if c.Duration > 0 {
		byTime := int(math.Ceil(c.Duration.Seconds() * c.Rate))
		if n == 0 || byTime < n {
			n = byTime
		}
	}
	return n
}

// Schedule returns the send offsets of cfg's requests from the run's start,
// in order. It is deterministic for a given Config.
func Schedule(cfg Config) []time.Duration {
	n := cfg.scheduleLen()
	out := make([]time.Duration, 0, n)
	gap := float64(time.Second) / cfg.Rate
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x70117a7e))
	var at float64
	for i := 0; i < n; i++ {
		if cfg.Duration > 0 && time.Duration(at) >= cfg.Duration {
			break
		}
		out = append(out, time.Duration(at))
		if cfg.Arrival == Poisson {
			at += rng.ExpFloat64() * gap
		} else {
			at += gap
		}
	}
	return out
}

// Result is what one run measured.
type Result struct {
	Rate      float64        `json:"rate_rps"`
	Scheduled int            `json:"scheduled"`
	Sent      int            `json:"sent"`
	OK        int            `json:"ok"`
	Errors    map[string]int `json:"errors,omitempty"`
	// Elapsed runs from the first scheduled send to the last response.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Latency is the whole response (last byte), from the scheduled time,
	// for successful requests only. TTFT is the first SSE data line (streams).
	Latency Summary  `json:"latency"`
	TTFT    *Summary `json:"ttft,omitempty"`
	// SendLag is how late the generator itself sent requests after their
	// scheduled time (sent ones only). Large values mean the generator was
	// starved of CPU; the latencies above include that lateness.
	SendLag Summary `json:"send_lag"`

	latency, ttft *hdrhistogram.Histogram
}

// Summary gives a histogram's quantiles in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Summary {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Summary{
		Count: h.TotalCount(), Mean: h.Mean() / 1000,
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)),
		Max: ms(h.Max()),
	}
}

// Errored returns the number of failed requests (all classes).
func (r *Result) Errored() int {
	n := 0
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// LatencyHistogram returns the whole-response latency histogram (µs).
func (r *Result) LatencyHistogram() *hdrhistogram.Histogram { return r.latency }

// TTFTHistogram returns the TTFT histogram (µs), nil unless streaming.
func (r *Result) TTFTHistogram() *hdrhistogram.Histogram { return r.ttft }

// CDF returns the latency distribution as (milliseconds, cumulative
// fraction) points, one per histogram bucket that holds values.
func CDF(h *hdrhistogram.Histogram) (ms, frac []float64) {
	if h == nil || h.TotalCount() == 0 {
		return nil, nil
	}
	total := float64(h.TotalCount())
	var seen int64
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		seen += b.Count
		ms = append(ms, float64(b.To)/1000)
		frac = append(frac, float64(seen)/total)
	}
	return ms, frac
}

// run is the shared state of one Run.
type run struct {
	cfg    Config
	client *fasthttp.HostClient
	uri    string
	sem    chan struct{}
	start  time.Time

	mu      sync.Mutex
	latency *hdrhistogram.Histogram
	ttft    *hdrhistogram.Histogram
	errors  map[string]int
	ok      int
	last    time.Time

	sent, done atomic.Int64
}

// Run sends cfg's schedule and returns what it measured. It returns early
// (with what was measured so far) when ctx ends: no new requests are sent
// and outstanding ones end by their timeouts.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if cfg.Arrival == "" {
		cfg.Arrival = Constant
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Method == "" {
		cfg.Method = fasthttp.MethodGet
		if cfg.Body != nil {
			cfg.Method = fasthttp.MethodPost
		}
	}
	u, _ := url.Parse(cfg.URL)
	r := &run{
		cfg: cfg,
		uri: cfg.URL,
		client: &fasthttp.HostClient{
			Addr:                          hostPort(u),
			Name:                          "tollgate-loadgen",
			MaxConns:                      cfg.MaxInFlight,
			ReadTimeout:                   cfg.Timeout,
			WriteTimeout:                  cfg.Timeout,
			MaxIdleConnDuration:           time.Minute,
			StreamResponseBody:            cfg.Stream,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			MaxConnWaitTimeout:            0,
			Dial:                          cfg.Dial,
			IsTLS:                         cfg.TLS != nil,
			TLSConfig:                     cfg.TLS,
		},
		sem:     make(chan struct{}, cfg.MaxInFlight),
		latency: hdrhistogram.New(histMin, histMax, 3),
		errors:  map[string]int{},
	}
	if cfg.Stream {
		r.ttft = hdrhistogram.New(histMin, histMax, 3)
	}
	defer r.client.CloseIdleConnections()

	sched := Schedule(cfg)
	stopProgress := r.progress(len(sched))
	defer stopProgress()

	var wg sync.WaitGroup
	lag := hdrhistogram.New(histMin, histMax, 3)
	pace := newPacer()
	defer pace.stop()
	r.start = time.Now()
loop:
	for _, off := range sched {
		due := r.start.Add(off)
		if !pace.sleepUntil(ctx, due) {
			break loop
		}
		select {
		case r.sem <- struct{}{}:
		default:
			r.fail(ErrOverload)
			r.done.Add(1)
			continue
		}
		r.sent.Add(1)
		_ = lag.RecordValue(min(max(int64(time.Since(due)/time.Microsecond), histMin), histMax))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-r.sem }()
			r.one(due)
		}()
	}
	wg.Wait()

	res := &Result{
		Rate: cfg.Rate, Scheduled: len(sched), Sent: int(r.sent.Load()), OK: r.ok,
		Errors: r.errors, latency: r.latency, ttft: r.ttft,
		Latency: summarize(r.latency), SendLag: summarize(lag),
	}
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	if !r.last.IsZero() {
		res.Elapsed = r.last.Sub(r.start)
	}
	if r.ttft != nil {
		s := summarize(r.ttft)
		res.TTFT = &s
	}
	return res, ctx.Err()
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func (r *run) progress(total int) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				r.cfg.Progress(Progress{Scheduled: total, Sent: int(r.sent.Load()), Done: int(r.done.Load())})
			case <-quit:
				return
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// one sends one request due at due and records its outcome.
func (r *run) one(due time.Time) {
	defer r.done.Add(1)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.uri)
	req.Header.SetMethod(r.cfg.Method)
	for k, v := range r.cfg.Header {
		req.Header.Set(k, v)
	}
	if r.cfg.Body != nil {
		req.SetBodyRaw(r.cfg.Body)
	}
	var err error
	if r.cfg.Stream {
		err = r.client.Do(req, resp)
	} else {
		err = r.client.DoTimeout(req, resp, r.cfg.Timeout)
	}
	if err != nil {
		r.fail(classify(err))
		return
	}
	if sc := resp.StatusCode(); sc != fasthttp.StatusOK {
		if r.cfg.Stream {
			_ = resp.CloseBodyStream()
		}
		r.fail("http_" + strconv.Itoa(sc))
		return
	}
	if !r.cfg.Stream {
		r.record(due, time.Now(), time.Time{})
		return
	}
	first, err := readSSE(resp)
	_ = resp.CloseBodyStream()
	if err != nil {
		r.fail(err.Error())
		return
	}
	r.record(due, time.Now(), first)
}

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

var (
	dataPrefix = []byte("data:")
	doneLine   = []byte("[DONE]")
)

// errClass is an error whose text is its Result.Errors class.
type errClass string

func (e errClass) Error() string { return string(e) }

// readSSE reads an event stream to its end and returns when its first data
// line arrived. A stream must end with data: [DONE].
func readSSE(resp *fasthttp.Response) (first time.Time, err error) {
	var src io.Reader = resp.BodyStream()
	if src == nil {
		src = bytes.NewReader(resp.Body())
	}
	br := readers.Get().(*bufio.Reader)
	br.Reset(src)
	defer func() { br.Reset(nil); readers.Put(br) }()
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, dataPrefix) {
			if first.IsZero() {
				first = time.Now()
			}
			if bytes.Equal(bytes.TrimSpace(line[len(dataPrefix):]), doneLine) {
				_, _ = io.Copy(io.Discard, br)
				return first, nil
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			// A long line: the rest of it is read by the next calls.
		case err == io.EOF:
			return first, errClass(ErrTruncated)
		case err != nil:
			return first, errClass(classify(err))
		}
	}
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return "too_large"
	default:
		return ErrConn
	}
}

func (r *run) record(due, end, first time.Time) {
	us := func(d time.Duration) int64 { return max(int64(d/time.Microsecond), histMin) }
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok++
	_ = r.latency.RecordValue(min(us(end.Sub(due)), histMax))
	if r.ttft != nil && !first.IsZero() {
		_ = r.ttft.RecordValue(min(us(first.Sub(due)), histMax))
	}
	if end.After(r.last) {
		r.last = end
	}
}

func (r *run) fail(class string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[class]++
	if now := time.Now(); now.After(r.last) {
		r.last = now
	}
}
