package workers_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/engine/sim"
)

// outboundLink starts a link server and a worker dialled in on it, serving
// the agent's handler over the link; it returns the gateway's client.
func outboundLink(t *testing.T, a *workers.Agent) (*workers.Client, *workerlink.Dialer) {
	t.Helper()
	srv, err := workerlink.NewServer(workerlink.ServerConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	// The gateway side: the first stream the worker opens names its session.
	sessions := make(chan string, 1)
	go func() {
		c, err := srv.Streams().Accept()
		if err == nil {
			sessions <- c.(*workerlink.Stream).LinkSession()
			c.Close()
		}
	}()
	d, err := workerlink.NewDialer(workerlink.DialerConfig{Addr: ln.Addr().String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	hs := &http.Server{Handler: workers.NewHandler(a, nil)}
	go hs.Serve(d)
	t.Cleanup(func() { cancel(); hs.Close(); srv.Close() })
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	st, err := d.DialContext(dctx, "tcp", "gateway")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	session := <-sessions
	opts := linkOptions()
	opts.Dial = func(ctx context.Context) (net.Conn, error) { return srv.Dial(ctx, session) }
	return workers.NewClient(workers.LinkURL(session), opts), d
}

func TestBatchOverOutboundLink(t *testing.T) {
	c, d := outboundLink(t, newAgent(t, simEngine(t)))
	for range 2 { // the second batch reuses the pooled stream
		var got collected
		b := &task.Batch{ID: "b1", Tasks: []task.Task{chatTask("r0")}}
		if err := c.Run(context.Background(), b, func(ev task.Event) { got.emit(ev) }); err != nil {
			t.Fatal(err)
		}
		if ev := got.last(t, 0); ev.Type != task.EventDone || len(got.events[0]) < 2 {
			t.Fatalf("chat: %d events ending %+v", len(got.events[0]), ev)
		}
	}
	// A link that is gone fails the next batch as retryable: no event was
	// delivered.
	d.Close()
	err := c.Run(context.Background(), &task.Batch{ID: "b2", Tasks: []task.Task{chatTask("r1")}}, func(task.Event) {})
	if !workers.Retryable(err) {
		t.Fatalf("a batch on a dead link must fail retryable: %v", err)
	}
}

func TestLinkWorkerWithoutLink(t *testing.T) {
	err := workers.NewClient(workers.LinkURL("abc"), workers.ClientOptions{}).Run(context.Background(),
		&task.Batch{ID: "b", Tasks: []task.Task{chatTask("r")}}, func(task.Event) {})
	if !workers.Retryable(err) {
		t.Fatalf("a link:// worker with no link must fail retryable: %v", err)
	}
}

func TestValidateLinkURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{workers.LinkOutbound, true},
		{workers.LinkURL("0123456789abcdef"), true},
		{"link://", false},
		{"link://UPPER", false},
		{"link://a:80", false},
		{"link://a/b", false},
		{"link://" + string(make([]byte, 65)), false},
	} {
		if err := workers.ValidateWorkerURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("ValidateWorkerURL(%q) = %v, want ok %v", tc.url, err, tc.ok)
		}
	}
}

// A link that dies mid-batch ends the batch, promptly, with a failure that
// is not retryable: events were delivered, so the batch may not be sent
// again (the retry rule), and the gateway must not hang on the dead stream.
func TestOutboundLinkCutMidStream(t *testing.T) {
	e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], Seed: 1, TimeScale: 30})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c, d := outboundLink(t, newAgent(t, e))
		tk := chatTask(fmt.Sprint("cut", i))
		tk.MaxTokens = 4000
		tk.Stream = true
		first := make(chan struct{})
		var once sync.Once
		done := make(chan error, 1)
		go func() {
			done <- c.Run(context.Background(), &task.Batch{ID: fmt.Sprint("b", i), Tasks: []task.Task{tk}}, func(ev task.Event) {
				once.Do(func() { close(first) })
			})
		}()
		select {
		case <-first:
		case err := <-done:
			t.Fatalf("run %d ended before any event: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: no event in 10 s", i)
		}
		d.Close()
		select {
		case err := <-done:
			if err == nil || workers.Retryable(err) {
				t.Fatalf("run %d: a batch cut after events must fail, not retryable: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: the batch did not end within 10 s of the link dying", i)
		}
	}
}

// A one-answer batch whose link dies before its answer delivered nothing:
// it fails as retryable, so the scheduler may place it on another worker.
func TestOutboundLinkCutBeforeAnswer(t *testing.T) {
	e, err := sim.New(sim.Config{Profile: sim.Profiles()["sim-tiny"], Seed: 1, TimeScale: 30})
	if err != nil {
		t.Fatal(err)
	}
	c, d := outboundLink(t, newAgent(t, e))
	tk := chatTask("cut-unary")
	tk.MaxTokens = 4000
	done := make(chan error, 1)
	var events int
	go func() {
		done <- c.Run(context.Background(), &task.Batch{ID: "bu", Tasks: []task.Task{tk}}, func(task.Event) { events++ })
	}()
	time.Sleep(300 * time.Millisecond)
	d.Close()
	select {
	case err := <-done:
		if events != 0 || !workers.Retryable(err) {
			t.Fatalf("a batch cut before any event must fail retryable: %v (%d events)", err, events)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the batch did not end within 10 s of the link dying")
	}
}
