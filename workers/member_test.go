package workers_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// testGateway serves the registration routes over a Registrar, as the
// gateway does, and reports each call on events.
type testGateway struct {
	reg    *workers.Registrar
	events chan string
	mu     sync.Mutex
	forget bool // answer the next heartbeat with unknown_worker
	last   task.Heartbeat
}

func (g *testGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	switch r.URL.Path {
	case workers.PathChallenge:
		c, err := g.reg.Challenge(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), now)
		if err != nil {
			workers.WriteError(w, err)
			return
		}
		json.NewEncoder(w).Encode(workers.ChallengeResponse{Challenge: c})
	case workers.PathRegister:
		var req workers.RegisterRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			workers.WriteError(w, apierr.BadRequest("", "invalid_json", "%v", err))
			return
		}
		reg, err := g.reg.Register(r.Context(), &req, now)
		if err != nil {
			workers.WriteError(w, err)
			return
		}
		json.NewEncoder(w).Encode(workers.RegisterResponse{WorkerID: reg.WorkerID, SessionToken: reg.SessionToken,
			HeartbeatIntervalMS: g.reg.HeartbeatInterval().Milliseconds(), CountersignToken: reg.CountersignToken})
		g.events <- "register"
	case workers.PathHeartbeat:
		var hb task.Heartbeat
		json.NewDecoder(r.Body).Decode(&hb)
		if err := g.reg.VerifySession(hb.WorkerID, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); err != nil {
			workers.WriteError(w, err)
			return
		}
		if err := task.ValidateHeartbeat(&hb); err != nil {
			workers.WriteError(w, err)
			return
		}
		g.mu.Lock()
		forget := g.forget
		g.forget = false
		g.last = hb
		g.mu.Unlock()
		if forget {
			g.reg.Forget(hb.WorkerID)
			workers.WriteError(w, apierr.Unauthorized(workers.CodeUnknownWorker, "unknown worker"))
			g.events <- "forgot"
			return
		}
		w.WriteHeader(http.StatusNoContent)
		if hb.Draining {
			g.events <- "heartbeat-draining"
		} else {
			g.events <- "heartbeat"
		}
	case workers.PathDeregister:
		var req workers.DeregisterRequest
		json.NewDecoder(r.Body).Decode(&req)
		if err := g.reg.VerifySession(req.WorkerID, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); err != nil {
			workers.WriteError(w, err)
			return
		}
		g.reg.Forget(req.WorkerID)
		w.WriteHeader(http.StatusNoContent)
		g.events <- "deregister"
	default:
		http.NotFound(w, r)
	}
}

type fixedGPUs []task.GPU

func (f fixedGPUs) GPUs(context.Context) []task.GPU { return f }

// next waits for the next gateway event, skipping plain heartbeats unless
// that is what is wanted.
func next(t *testing.T, events chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev == want {
				return
			}
			if ev != "heartbeat" && ev != "heartbeat-draining" {
				t.Fatalf("gateway saw %q, want %q", ev, want)
			}
		case <-timeout:
			t.Fatalf("gateway never saw %q", want)
		}
	}
}

func TestRunMember(t *testing.T) {
	k, _ := keys.Generate(nil)
	eng := &blockingEngine{Engine: simEngine(t), started: make(chan string, 1)}
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: k.WorkerID(), Engine: eng})
	reg, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken},
		OpenRegistration: true, HeartbeatInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	gw := &testGateway{reg: reg, events: make(chan string, 100)}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- workers.RunMember(ctx, workers.MemberConfig{
			GatewayURL: srv.URL, ProviderToken: providerToken, Key: k, AdvertiseURL: "http://127.0.0.1:9",
			Agent: agent, GPUs: fixedGPUs{{Index: 0, Name: "NVIDIA H100", UUID: "GPU-1"}},
		})
	}()
	next(t, gw.events, "register")
	next(t, gw.events, "heartbeat")
	gw.mu.Lock()
	hb := gw.last
	gw.mu.Unlock()
	if hb.WorkerID != k.WorkerID() || len(hb.GPUs) != 1 || hb.Load.Source != "sim" {
		t.Errorf("heartbeat %+v", hb)
	}

	// The gateway forgets the worker: it registers again.
	gw.mu.Lock()
	gw.forget = true
	gw.mu.Unlock()
	next(t, gw.events, "forgot")
	next(t, gw.events, "register")
	next(t, gw.events, "heartbeat")

	// SIGTERM with a task in flight: draining heartbeat, then the task
	// finishes, then deregistration.
	running := make(chan error, 1)
	go func() {
		running <- agent.RunBatch(context.Background(), &task.Batch{ID: "b", Tasks: []task.Task{chatTask("r0")}}, func(task.Event) error { return nil })
	}()
	<-eng.started
	cancel()
	next(t, gw.events, "heartbeat-draining")
	select {
	case err := <-done:
		t.Fatalf("RunMember returned %v with a task in flight", err)
	default:
	}
	agent.Cancel("b", 0)
	if err := <-running; err != nil {
		t.Fatal(err)
	}
	next(t, gw.events, "deregister")
	if err := <-done; err != nil {
		t.Fatalf("RunMember: %v", err)
	}
}

// TestLinkTokenDuringRegistration is the start-up race: the gateway routes
// a batch to a worker as soon as it accepts the registration, before the
// worker has read its new session token from the answer. The link handler
// (WithLinkAuth(r.LinkToken)) must wait for the answer and accept the
// batch, not refuse it (a refusal fails the request and gets the worker
// ejected).
func TestLinkTokenDuringRegistration(t *testing.T) {
	k, _ := keys.Generate(nil)
	agent := newAgent(t, simEngine(t))
	reg, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	var r *workers.Registerer
	arrived := make(chan struct{}, 1)
	linkHandler := workers.NewHandler(agent, nil, workers.WithLinkAuth(func() string { return r.LinkToken() }))
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		arrived <- struct{}{}
		linkHandler.ServeHTTP(w, req)
	}))
	defer worker.Close()

	batchStatus := make(chan int, 1)
	gw := &testGateway{reg: reg, events: make(chan string, 100)}
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != workers.PathRegister {
			gw.ServeHTTP(w, req)
			return
		}
		var rr workers.RegisterRequest
		if err := json.NewDecoder(req.Body).Decode(&rr); err != nil {
			workers.WriteError(w, apierr.BadRequest("", "invalid_json", "%v", err))
			return
		}
		accepted, err := reg.Register(req.Context(), &rr, time.Now())
		if err != nil {
			workers.WriteError(w, err)
			return
		}
		// The scheduler now routes a batch to the worker, carrying the new
		// session token, while this answer is still unsent.
		go func() {
			body, _ := json.Marshal(task.Batch{ID: "b1", Tasks: []task.Task{chatTask("r0")}})
			breq, _ := http.NewRequest(http.MethodPost, worker.URL+"/v1/worker/batch", strings.NewReader(string(body)))
			breq.Header.Set("Authorization", "Bearer "+accepted.SessionToken)
			resp, err := http.DefaultClient.Do(breq)
			if err != nil {
				batchStatus <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			batchStatus <- resp.StatusCode
		}()
		<-arrived // the batch is at the worker before the worker has its token
		json.NewEncoder(w).Encode(workers.RegisterResponse{WorkerID: accepted.WorkerID, SessionToken: accepted.SessionToken,
			HeartbeatIntervalMS: 1000})
	}))
	defer gateway.Close()

	r, err = workers.NewRegisterer(workers.MemberConfig{GatewayURL: gateway.URL, ProviderToken: providerToken, Key: k,
		AdvertiseURL: worker.URL, Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := <-batchStatus; got != http.StatusOK {
		t.Errorf("batch sent during registration: status %d, want 200", got)
	}
}

// TestRegistererKeepsTheCountersignCredential: the credential the gateway
// answered with is what the worker's countersign route then requires.
func TestRegistererKeepsTheCountersignCredential(t *testing.T) {
	k, _ := keys.Generate(nil)
	reg, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	gw := &testGateway{reg: reg, events: make(chan string, 100)}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	r, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: srv.URL, ProviderToken: providerToken, Key: k,
		AdvertiseURL: "http://127.0.0.1:9", Agent: newAgent(t, simEngine(t))})
	if err != nil {
		t.Fatal(err)
	}
	if r.CountersignToken() != "" {
		t.Fatal("a credential before registering")
	}
	resp, err := r.Register(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if resp.CountersignToken == "" || r.CountersignToken() != resp.CountersignToken {
		t.Errorf("CountersignToken %q, gateway answered %q", r.CountersignToken(), resp.CountersignToken)
	}
}
