package overhead

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/tollgate-ai/tollgate/bench/mockupstream"
)

// Part is a running piece of the bench: the mock upstream or the Tollgate
// stack, in this process or in a child process.
type Part struct {
	URL string
	// APIKey is the stack's bearer key ("" for the upstream).
	APIKey string
	// PID is the child process's id (0 in this process).
	PID int
	// Close stops the part.
	Close func(context.Context) error
}

// Launcher starts the bench's parts. The zero Launcher (Config.Launch nil)
// runs both in this process.
type Launcher struct {
	Upstream func(ctx context.Context, cfg mockupstream.Config) (*Part, error)
	Stack    func(ctx context.Context, cfg StackConfig) (*Part, error)
}

// InProcess runs the mock upstream and the stack in this process (what `go
// test` can do: it cannot run the tollgate binary's child commands).
func InProcess() *Launcher {
	return &Launcher{
		Upstream: func(_ context.Context, cfg mockupstream.Config) (*Part, error) {
			up, err := mockupstream.Start(cfg)
			if err != nil {
				return nil, err
			}
			return &Part{URL: up.URL, Close: func(context.Context) error { return up.Close() }}, nil
		},
		Stack: func(ctx context.Context, cfg StackConfig) (*Part, error) {
			st, err := StartStack(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return &Part{URL: st.URL, APIKey: st.APIKey, Close: st.Close}, nil
		},
	}
}

// Processes runs the mock upstream and the stack each in a child process,
// as they are deployed: clients, the gateway and the inference server never
// share a Go runtime, so none of them waits on another's goroutines, timers
// or garbage collection. argv is the command that serves a part (the
// tollgate binary and "bench" "serve"); the part's flags are appended (see
// ServeFlags) and its stdin is kept open while it should run.
func Processes(argv ...string) *Launcher {
	return &Launcher{
		Upstream: func(ctx context.Context, cfg mockupstream.Config) (*Part, error) {
			return startChild(ctx, argv, []string{"-part", "upstream",
				"-upstream-latency", cfg.Latency.String(), "-upstream-jitter", cfg.Jitter.String(),
				"-tokens", strconv.Itoa(cfg.Tokens), "-model", Model})
		},
		Stack: func(ctx context.Context, cfg StackConfig) (*Part, error) {
			args := []string{"-part", "stack", "-upstream", cfg.UpstreamURL, "-model", cfg.Model,
				"-max-concurrency", strconv.Itoa(cfg.MaxConcurrency)}
			if cfg.InProcessWorker {
				args = append(args, "-in-process-worker")
			}
			if cfg.OutboundLink {
				args = append(args, "-outbound-link")
			}
			if cfg.Receipts {
				args = append(args, "-receipts")
			}
			return startChild(ctx, argv, args)
		},
	}
}

// ready is the line a child part prints once it serves.
type ready struct {
	URL    string `json:"url"`
	APIKey string `json:"api_key,omitempty"`
}

// childStartTimeout bounds how long a child part takes to start serving.
const childStartTimeout = 30 * time.Second

func startChild(ctx context.Context, argv, args []string) (*Part, error) {
	if len(argv) == 0 {
		return nil, errors.New("overhead: no command to start a part with")
	}
	cmd := exec.Command(argv[0], append(append([]string(nil), argv[1:]...), args...)...)
	setParentDeathSignal(cmd)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("overhead: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("overhead: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("overhead: start %s: %w", argv[0], err)
	}
	waited := make(chan error, 1)
	kill := func() {
		_ = cmd.Process.Kill()
	}
	lines := make(chan []byte, 1)
	go func() {
		br := bufio.NewReader(io.LimitReader(stdout, 64<<10))
		line, _ := br.ReadBytes('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
		waited <- cmd.Wait()
	}()
	var line []byte
	select {
	case line = <-lines:
	case <-time.After(childStartTimeout):
		kill()
		return nil, fmt.Errorf("overhead: %s did not start within %v: %s", args[1], childStartTimeout, stderr.String())
	case <-ctx.Done():
		kill()
		return nil, ctx.Err()
	}
	var r ready
	if err := json.Unmarshal(bytes.TrimSpace(line), &r); err != nil || r.URL == "" {
		kill()
		<-waited
		return nil, fmt.Errorf("overhead: %s did not start: %s", args[1], stderr.String())
	}
	p := &Part{URL: r.URL, APIKey: r.APIKey, PID: cmd.Process.Pid}
	var once sync.Once
	var closeErr error
	p.Close = func(ctx context.Context) error {
		once.Do(func() {
			_ = stdin.Close() // the child shuts down at end of input
			select {
			case err := <-waited:
				if err != nil {
					closeErr = fmt.Errorf("overhead: %s exited: %w: %s", args[1], err, stderr.String())
				}
			case <-ctx.Done():
				kill()
				<-waited
				closeErr = fmt.Errorf("overhead: %s did not stop in time; killed", args[1])
			}
		})
		return closeErr
	}
	return p, nil
}

// tailBuffer keeps the last 4 KiB written to it (a child's stderr).
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-4<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// ParseServeFlags reads a child part's flags (those Processes passes).
func ParseServeFlags(args []string) (ServeConfig, error) {
	fs := flag.NewFlagSet("tollgate bench serve", flag.ContinueOnError)
	part := fs.String("part", "", "upstream or stack")
	latency := fs.Duration("upstream-latency", time.Millisecond, "upstream: latency before each response")
	jitter := fs.Duration("upstream-jitter", 0, "upstream: extra uniform random latency in [0, jitter)")
	tokens := fs.Int("tokens", 16, "upstream: completion tokens per response")
	model := fs.String("model", Model, "the served model")
	upstream := fs.String("upstream", "", "stack: the upstream's base URL")
	maxConc := fs.Int("max-concurrency", 1024, "stack: the worker's slot count")
	inProcess := fs.Bool("in-process-worker", false, "stack: link the scheduler to the worker agent in process")
	outbound := fs.Bool("outbound-link", false, "stack: the worker dials the gateway (TLS + yamux), as behind NAT")
	receipts := fs.Bool("receipts", false, "stack: receipts on (embedded write-ahead ledger, durable worker records, record checks)")
	if err := fs.Parse(args); err != nil {
		return ServeConfig{}, err
	}
	if fs.NArg() > 0 {
		return ServeConfig{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg := ServeConfig{Part: *part}
	switch *part {
	case "upstream":
		cfg.Upstream.Latency, cfg.Upstream.Jitter, cfg.Upstream.Tokens = *latency, *jitter, *tokens
		cfg.Upstream.Models = []string{*model}
		if err := cfg.Upstream.Validate(); err != nil {
			return ServeConfig{}, err
		}
	case "stack":
		if *upstream == "" {
			return ServeConfig{}, errors.New("-upstream is required for the stack part")
		}
		if *maxConc <= 0 || *maxConc > 1<<16 {
			return ServeConfig{}, fmt.Errorf("-max-concurrency: %d is outside [1, 65536]", *maxConc)
		}
		cfg.Stack = StackConfig{UpstreamURL: *upstream, Model: *model, MaxConcurrency: *maxConc, InProcessWorker: *inProcess, OutboundLink: *outbound, Receipts: *receipts}
	default:
		return ServeConfig{}, fmt.Errorf("-part: %q is not upstream or stack", *part)
	}
	return cfg, nil
}

// ServeConfig is what a child part is told by its flags.
type ServeConfig struct {
	Part     string // "upstream" or "stack"
	Upstream mockupstream.Config
	Stack    StackConfig
}

// Serve runs one part in this process: it prints its ready line on out and
// serves until stop is closed (the parent closes the child's stdin) or ctx
// ends.
func Serve(ctx context.Context, cfg ServeConfig, out io.Writer, stop <-chan struct{}) error {
	var p *Part
	var err error
	switch cfg.Part {
	case "upstream":
		p, err = InProcess().Upstream(ctx, cfg.Upstream)
	case "stack":
		p, err = InProcess().Stack(ctx, cfg.Stack)
	default:
		return fmt.Errorf("overhead: unknown part %q (want upstream or stack)", cfg.Part)
	}
	if err != nil {
		return err
	}
	line, _ := json.Marshal(ready{URL: p.URL, APIKey: p.APIKey})
	if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
		_ = p.Close(context.Background())
		return err
	}
	select {
	case <-stop:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return p.Close(sctx)
}

// StdinClosed returns a channel closed when stdin reaches its end.
func StdinClosed() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	return done
}
