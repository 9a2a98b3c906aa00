// Package overhead measures the latency and CPU Tollgate adds in front of an
// inference server: the same open-loop load is sent straight to a mock
// OpenAI upstream and then through Tollgate (gateway + scheduler + worker
// with the OpenAI-upstream engine, over loopback sockets) at several rates,
// non-streaming and streaming, and each quantile of the direct run is
// subtracted from the same quantile through the gateway.
//
// Method:
//   - Layout (Config.Launch): `tollgate bench overhead` runs the load
//     generator in its own process and the mock upstream and the Tollgate
//     stack (gateway + worker, linked over loopback HTTP) each in a child
//     process, as they are deployed. Sharing one Go runtime would make the
//     mock's timers and the generator's goroutines wait behind the
//     gateway's goroutines and garbage collection, and charge that to the
//     gateway (measured: the mock's 1 ms sleep had p99 1.28 ms in the
//     direct phase and 1.89 ms in the through phase when they shared one).
//     Tests run everything in process (InProcess).
//   - Both phases of a step replay one arrival schedule (same rate, same
//     seed) against one mock upstream; latency counts from each request's
//     scheduled send time (see bench/loadgen), so queueing in the gateway
//     shows up instead of slowing the generator.
//   - Added latency at quantile q = through(q) − direct(q); it can come out
//     slightly negative in noise.
//   - Gateway CPU per request: with the stack in a child process, that
//     process's CPU time (user+system, /proc) in the through phase per
//     request (gateway and worker together). In process: this process's
//     CPU time per request in the through phase minus the same in the
//     direct phase (the generator's and the mock's share cancels). A GC
//     runs before each phase so one phase's garbage is not collected on the
//     next one's account.
//   - Peak RSS is the stack process's (in process: the whole process's).
//   - A rate step that shows errors marks saturation: higher rates are not
//     run for that mode.
package overhead

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"syscall"
	"time"

	"github.com/tollgate-ai/tollgate/bench/loadgen"
	"github.com/tollgate-ai/tollgate/bench/mockupstream"
	"github.com/tollgate-ai/tollgate/bench/report"
)

// Modes.
const (
	ModeJSON   = "json"   // non-streaming responses
	ModeStream = "stream" // SSE with a final usage chunk
)

// TargetP99 is the added p99 latency, in milliseconds, that the summary's
// highest passing rate must hold.
const TargetP99 = 1.0

// Config describes a run.
type Config struct {
	// Rates are the offered loads in requests/s, ascending (default 500,
	// 1000, 2000, 3000, 4000).
	Rates []float64
	// Duration is the length of each phase (default 10s).
	Duration time.Duration
	// Modes to run, from ModeJSON and ModeStream (default both).
	Modes []string
	// Arrival is the schedule shape (default Poisson), with Seed.
	Arrival loadgen.Arrival
	Seed    uint64
	// Upstream shapes the mock (default 1ms latency, 16 tokens).
	Upstream mockupstream.Config
	// MaxInFlight bounds the load generator's outstanding requests (default 1024).
	MaxInFlight int
	// KeepGoing runs every rate even after one that saturated.
	KeepGoing bool
	// InProcessWorker leaves the worker transport out (see StackConfig).
	InProcessWorker bool
	// OutboundLink runs the worker link as a worker behind NAT has it
	// (see StackConfig).
	OutboundLink bool
	// Receipts runs the stack with receipts on, as shipped (see
	// StackConfig.Receipts); `tollgate bench overhead` sets it unless
	// -receipts=false.
	Receipts bool
	// Launch starts the mock upstream and the stack (default InProcess()).
	Launch *Launcher
	// Progress, when set, gets a one-line status about twice a second.
	Progress func(line string)
	// Logger gets the stack's logs (default: JSON at info level, discarded).
	Logger *slog.Logger
}

// Validate checks cfg and names the first bad field.
func (c *Config) Validate() error {
	for i, r := range c.Rates {
		if !(r > 0) || r > 1e6 {
			return fmt.Errorf("rates[%d]: %v is outside (0, 1e6]", i, r)
		}
		if i > 0 && r <= c.Rates[i-1] {
			return fmt.Errorf("rates[%d]: %v is not above the rate before it", i, r)
		}
	}
	if c.Duration < 0 || c.Duration > time.Hour {
		return fmt.Errorf("duration: %v is outside [0, 1h]", c.Duration)
	}
	for i, m := range c.Modes {
		if m != ModeJSON && m != ModeStream {
			return fmt.Errorf("modes[%d]: %q is not %s or %s", i, m, ModeJSON, ModeStream)
		}
	}
	if err := c.Upstream.Validate(); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if len(c.Rates) == 0 {
		c.Rates = []float64{500, 1000, 2000, 3000, 4000}
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if len(c.Modes) == 0 {
		c.Modes = []string{ModeJSON, ModeStream}
	}
	if c.Arrival == "" {
		c.Arrival = loadgen.Poisson
	}
	if c.Upstream.Latency == 0 && c.Upstream.Jitter == 0 {
		c.Upstream.Latency = time.Millisecond
	}
	if c.Upstream.Tokens == 0 {
		c.Upstream.Tokens = 16
	}
	if len(c.Upstream.Models) == 0 {
		c.Upstream.Models = []string{Model}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1024
	}
	if c.Launch == nil {
		c.Launch = InProcess()
	}
	if c.Logger == nil {
		// Format every record as production would, then drop it: the
		// per-request logging cost stays in the measurement.
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	return c
}

// Model is the model name the bench serves and requests.
const Model = "mock-llm"

// Result is a whole run.
type Result struct {
	Env      Env           `json:"env"`
	Duration time.Duration `json:"phase_duration_ns"`
	Arrival  string        `json:"arrival"`
	Upstream UpstreamInfo  `json:"upstream"`
	// WorkerLink is "http" (the gateway dials the worker), "outbound" (the
	// worker dialled the gateway: TLS + yamux) or "in-process".
	WorkerLink string `json:"worker_link"`
	// Layout is "processes" (generator, mock upstream and stack each in
	// its own process) or "in-process" (all in one).
	Layout string `json:"layout"`
	// Receipts: every response waited for its durable receipt.
	Receipts bool   `json:"receipts"`
	Steps    []Step `json:"steps"`
	// MaxRate is, per mode, the highest rate such that it and every lower
	// rate held added p99 ≤ TargetP99 with no errors (0: none did).
	MaxRate map[string]float64 `json:"max_rate_p99_under_1ms"`
	// PeakRSSMiB is the stack process's peak resident set (in process: the
	// whole process's).
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// UpstreamInfo describes the mock.
type UpstreamInfo struct {
	LatencyMS float64 `json:"latency_ms"`
	JitterMS  float64 `json:"jitter_ms"`
	Tokens    int     `json:"tokens"`
}

// Step is one rate in one mode.
type Step struct {
	Mode    string          `json:"mode"`
	Rate    float64         `json:"rate_rps"`
	Direct  *loadgen.Result `json:"direct"`
	Through *loadgen.Result `json:"through"`
	// Added is through minus direct, per quantile, in ms.
	Added     Added  `json:"added_ms"`
	AddedTTFT *Added `json:"added_ttft_ms,omitempty"`
	// ThroughRPS is the completed request rate through the gateway.
	ThroughRPS float64 `json:"through_rps"`
	// CPUPerRequestUS is the gateway's (and worker's) CPU per request, µs.
	CPUPerRequestUS float64 `json:"gateway_cpu_us_per_request"`
	// DirectCPUPerRequestUS is the CPU per request in the direct phase
	// (load generator and mock together), µs.
	DirectCPUPerRequestUS float64 `json:"direct_cpu_us_per_request"`
}

// Errors returns the failed requests of both phases.
func (s *Step) Errors() int { return s.Direct.Errored() + s.Through.Errored() }

// Passed reports whether the step held the target with no errors.
func (s *Step) Passed() bool { return s.Errors() == 0 && s.Added.P99 <= TargetP99 }

// Added is a latency difference per quantile, in milliseconds.
type Added struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

func added(through, direct loadgen.Summary) Added {
	return Added{
		P50: through.P50 - direct.P50, P90: through.P90 - direct.P90,
		P99: through.P99 - direct.P99, P999: through.P999 - direct.P999,
	}
}

// Run runs the scenario: for each mode and rate, the direct phase, then the
// through-Tollgate phase.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("overhead: %w", err)
	}
	cfg = cfg.withDefaults()
	up, err := cfg.Launch.Upstream(ctx, cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("overhead: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = up.Close(sctx)
		cfg.Logger.Debug("mock upstream closed")
	}()
	stack, err := cfg.Launch.Stack(ctx, StackConfig{
		UpstreamURL: up.URL, Model: Model, MaxConcurrency: cfg.MaxInFlight,
		InProcessWorker: cfg.InProcessWorker, OutboundLink: cfg.OutboundLink, Receipts: cfg.Receipts, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := stack.Close(sctx); err != nil {
			cfg.Logger.Warn("stack shutdown", "err", err)
		}
		cfg.Logger.Debug("stack closed")
	}()

	res := &Result{
		Env: CurrentEnv(), Duration: cfg.Duration, Arrival: string(cfg.Arrival),
		Upstream: UpstreamInfo{
			LatencyMS: ms(cfg.Upstream.Latency), JitterMS: ms(cfg.Upstream.Jitter),
			Tokens: cfg.Upstream.Tokens,
		},
		MaxRate: map[string]float64{}, WorkerLink: "http", Layout: "in-process", Receipts: cfg.Receipts,
	}
	switch {
	case cfg.InProcessWorker:
		res.WorkerLink = "in-process"
	case cfg.OutboundLink:
		res.WorkerLink = "outbound"
	}
	// CPU clocks: the direct phase's is this process's plus the upstream's;
	// the through phase's is the stack process's, or this whole process's
	// minus the direct phase's per request when the stack runs here.
	directCPU := func() (time.Duration, error) {
		self, err := processCPU()
		if err != nil || up.PID == 0 {
			return self, err
		}
		child, err := ProcessCPU(up.PID)
		return self + child, err
	}
	throughCPU := processCPU
	if stack.PID != 0 {
		res.Layout = "processes"
		throughCPU = func() (time.Duration, error) { return ProcessCPU(stack.PID) }
		defer func() { res.PeakRSSMiB = ProcessPeakRSSMiB(stack.PID) }()
	} else {
		defer func() { res.PeakRSSMiB = peakRSSMiB() }()
	}
	direct := target{name: "direct", url: up.URL, cpu: directCPU, header: map[string]string{"Content-Type": "application/json"}}
	through := target{name: "tollgate", url: stack.URL, cpu: throughCPU, header: map[string]string{
		"Content-Type": "application/json", "Authorization": "Bearer " + stack.APIKey,
	}}
	steps := len(cfg.Modes) * len(cfg.Rates)
	n := 0
	for _, mode := range cfg.Modes {
		stream := mode == ModeStream
		body := RequestBody(stream)
		// Warm both paths: connection pools, the scheduler's latency model.
		for _, t := range []target{direct, through} {
			warm := min(200*time.Millisecond, cfg.Duration/4)
			if _, err := t.load(ctx, cfg, body, stream, 1000, warm, nil); err != nil {
				return res, err
			}
		}
		passing := true
		for _, rate := range cfg.Rates {
			n++
			label := func(phase string) func(p loadgen.Progress) {
				return func(p loadgen.Progress) {
					if cfg.Progress != nil {
						cfg.Progress(fmt.Sprintf("step %d/%d  %-6s %5.0f rps  %-8s  %d/%d sent", n, steps, mode, rate, phase, p.Sent, p.Scheduled))
					}
				}
			}
			st := Step{Mode: mode, Rate: rate}
			var dCPU, tCPU time.Duration
			st.Direct, dCPU, err = direct.measure(ctx, cfg, body, stream, rate, label("direct"))
			if err != nil {
				return res, err
			}
			st.Through, tCPU, err = through.measure(ctx, cfg, body, stream, rate, label("tollgate"))
			if err != nil {
				return res, err
			}
			st.Added = added(st.Through.Latency, st.Direct.Latency)
			if st.Through.TTFT != nil && st.Direct.TTFT != nil {
				a := added(*st.Through.TTFT, *st.Direct.TTFT)
				st.AddedTTFT = &a
			}
			if st.Through.Elapsed > 0 {
				st.ThroughRPS = float64(st.Through.OK) / st.Through.Elapsed.Seconds()
			}
			st.DirectCPUPerRequestUS = perRequest(dCPU, st.Direct.Sent)
			st.CPUPerRequestUS = perRequest(tCPU, st.Through.Sent)
			if stack.PID == 0 {
				st.CPUPerRequestUS -= st.DirectCPUPerRequestUS
			}
			res.Steps = append(res.Steps, st)
			if passing && st.Passed() {
				res.MaxRate[mode] = rate
			} else {
				passing = false
			}
			cfg.Logger.Info("overhead step", "mode", mode, "rate", rate, "added_p99_ms", st.Added.P99, "errors", st.Errors())
			if st.Errors() > 0 && !cfg.KeepGoing {
				break
			}
		}
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func perRequest(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(n)
}

// RequestBody is the chat request every phase sends.
func RequestBody(stream bool) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"` + Model + `","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello to the benchmark in a few words."}],"max_tokens":16`)
	if stream {
		b.WriteString(`,"stream":true,"stream_options":{"include_usage":true}`)
	}
	b.WriteString("}")
	return b.Bytes()
}

type target struct {
	name   string
	url    string
	header map[string]string
	cpu    func() (time.Duration, error) // the CPU clock this phase is charged on
}

func (t target) load(ctx context.Context, cfg Config, body []byte, stream bool, rate float64, d time.Duration, progress func(loadgen.Progress)) (*loadgen.Result, error) {
	res, err := loadgen.Run(ctx, loadgen.Config{
		URL: t.url + "/chat/completions", Body: body, Header: t.header, Stream: stream,
		Rate: rate, Duration: d, Arrival: cfg.Arrival, Seed: cfg.Seed,
		MaxInFlight: cfg.MaxInFlight, Progress: progress,
	})
	if err != nil {
		return res, fmt.Errorf("overhead: %s at %.0f rps: %w", t.name, rate, err)
	}
	return res, nil
}

// measure runs one phase and returns the CPU time its clock counted.
func (t target) measure(ctx context.Context, cfg Config, body []byte, stream bool, rate float64, progress func(loadgen.Progress)) (*loadgen.Result, time.Duration, error) {
	runtime.GC()
	before, err := t.cpu()
	if err != nil {
		return nil, 0, err
	}
	res, err := t.load(ctx, cfg, body, stream, rate, cfg.Duration, progress)
	if err != nil {
		return nil, 0, err
	}
	after, err := t.cpu()
	if err != nil {
		return nil, 0, err
	}
	return res, after - before, nil
}

func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("overhead: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// peakRSSMiB is the process's high-water resident set (Linux reports KiB).
func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// Env describes the machine a run measured (shared by the benches).
type Env = report.Env

// CurrentEnv reads this machine's description.
func CurrentEnv() Env { return report.CurrentEnv() }

// ErrNoSteps is returned by report functions given a result without steps.
var ErrNoSteps = errors.New("overhead: the run has no steps")
