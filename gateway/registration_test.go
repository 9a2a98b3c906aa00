package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

const providerToken = "pt-0123456789abcdef"

// fakeRegistry records what the gateway tells the scheduler.
type fakeRegistry struct {
	mu         sync.Mutex
	workers    map[string]*task.Registered
	heartbeats int
}

func (r *fakeRegistry) Upsert(w *task.Registered) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers == nil {
		r.workers = map[string]*task.Registered{}
	}
	r.workers[w.WorkerID] = w
}

func (r *fakeRegistry) Heartbeat(hb *task.Heartbeat) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers[hb.WorkerID] == nil {
		return errors.New("unknown worker")
	}
	r.heartbeats++
	return nil
}

func (r *fakeRegistry) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.workers, id)
}

func (r *fakeRegistry) get(id string) *task.Registered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[id]
}

// modelsOnly is an engine that only names its model: registration never
// runs tasks.
type modelsOnly struct{}

func (modelsOnly) Models() []task.ModelVersion {
	return []task.ModelVersion{{Name: "tiny", Digest: strings.Repeat("ab", 32)}}
}

func (modelsOnly) Generate(context.Context, *task.Task, func(task.Delta) error) (task.Result, error) {
	return task.Result{}, errors.New("not for running")
}

func (modelsOnly) Embed(context.Context, string, []string) (task.EmbedResult, error) {
	return task.EmbedResult{}, errors.New("not for running")
}

// TestWorkerRegistration drives the gateway's registration routes with the
// worker's real client (workers.Registerer) and the real registrar.
func TestWorkerRegistration(t *testing.T) {
	reg := &fakeRegistry{}
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar = reg, registrar })
	key, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	member := func(token string) *workers.Registerer {
		r, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://" + h.ln.Addr().String(), ProviderToken: token,
			Key: key, AdvertiseURL: "http://127.0.0.1:9", Agent: agent})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ctx := context.Background()

	// The model is not on the allow-list yet.
	if _, err := member(providerToken).Register(ctx); errCode(err) != workers.CodeModelNotRegistered {
		t.Fatalf("register before the model is allowed: %v", err)
	}
	// The admin allows it.
	for _, tc := range []struct {
		name   string
		key    string
		body   string
		status int
	}{
		{"api key is not admin", testKey, `{"name":"tiny","digest":"` + strings.Repeat("ab", 32) + `"}`, 403},
		{"bad digest", adminKey, `{"name":"tiny","digest":"xyz"}`, 400},
		{"unknown field", adminKey, `{"name":"tiny","digest":"` + strings.Repeat("ab", 32) + `","color":"red"}`, 400},
		{"allowed", adminKey, `{"name":"tiny","digest":"` + strings.Repeat("ab", 32) + `"}`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "POST", "/v1/admin/models", tc.key, tc.body)
			if body := readAll(t, resp); resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
		})
	}

	if _, err := member("pt-wrong-token-000000").Register(ctx); errCode(err) != workers.CodeInvalidProviderToken {
		t.Fatalf("wrong provider token: %v", err)
	}
	m := member(providerToken)
	resp, err := m.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if resp.WorkerID != key.WorkerID() || resp.HeartbeatIntervalMS != 1000 || resp.SessionToken == "" {
		t.Errorf("register response %+v", resp)
	}
	if w := reg.get(key.WorkerID()); w == nil || w.URL != "http://127.0.0.1:9" || len(w.Models) != 1 {
		t.Fatalf("registry holds %+v", w)
	}
	if err := m.Heartbeat(ctx, false); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}

	malformed := h.do(t, "POST", "/v1/workers/heartbeat", m.SessionToken(), `{"worker_id":"","gpus":"many"}`)
	if body := readAll(t, malformed); malformed.StatusCode != 400 {
		t.Errorf("malformed heartbeat: %d %s", malformed.StatusCode, body)
	}
	empty := h.do(t, "POST", "/v1/workers/heartbeat", m.SessionToken(), `{"worker_id":""}`)
	if body := readAll(t, empty); empty.StatusCode != 400 || !strings.Contains(body, "invalid_heartbeat") {
		t.Errorf("heartbeat without worker_id: %d %s", empty.StatusCode, body)
	}

	badSession := h.do(t, "POST", "/v1/workers/heartbeat", "not-the-token", `{"worker_id":"`+key.WorkerID()+`"}`)
	if body := readAll(t, badSession); badSession.StatusCode != 401 || !strings.Contains(body, workers.CodeInvalidSession) {
		t.Errorf("bad session: %d %s", badSession.StatusCode, body)
	}

	// The scheduler forgets the worker (say, it timed out): the next
	// heartbeat tells it to register again.
	reg.Remove(key.WorkerID())
	if err := m.Heartbeat(ctx, false); errCode(err) != workers.CodeUnknownWorker {
		t.Fatalf("heartbeat after the registry forgot: %v", err)
	}
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if reg.get(key.WorkerID()) != nil {
		t.Error("deregistered worker still in the registry")
	}
	if err := m.Heartbeat(ctx, false); err == nil {
		t.Error("heartbeat after deregistering succeeded")
	}
}

func errCode(err error) string {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	if err == nil {
		return "<nil>"
	}
	return "not an apierr: " + err.Error()
}

// recordingLedger is a fakeLedger that also implements workerLedger.
type recordingLedger struct {
	fakeLedger
	mu     sync.Mutex
	urls   map[string]string
	creds  map[string]string
	models []task.ModelVersion
}

func (l *recordingLedger) SetCountersignCredential(_ context.Context, id, cred string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.creds == nil {
		l.creds = map[string]string{}
	}
	l.creds[id] = cred
	return nil
}

func (l *recordingLedger) SetWorkerURL(_ context.Context, id, url string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.urls == nil {
		l.urls = map[string]string{}
	}
	l.urls[id] = url
	return nil
}

func (l *recordingLedger) AdmitWorker(_ context.Context, _ string, vs ...task.ModelVersion) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.models = append(l.models, vs...)
	return nil
}

// TestRegistrationTellsTheLedger checks that a ledger which needs worker
// URLs and model versions (for countersigning and the model registry) gets
// them when a worker registers.
func TestRegistrationTellsTheLedger(t *testing.T) {
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	led := &recordingLedger{}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar, d.Ledger = &fakeRegistry{}, registrar, led })
	key, _ := keys.Generate(nil)
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://" + h.ln.Addr().String(), ProviderToken: providerToken,
		Key: key, AdvertiseURL: "http://127.0.0.1:9", Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.Register(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if led.urls[key.WorkerID()] != "http://127.0.0.1:9" || len(led.models) != 1 || led.models[0].Name != "tiny" {
		t.Errorf("ledger got urls %v models %v", led.urls, led.models)
	}
	// The provers get the worker's countersign credential, and so does the
	// worker (whose countersign route then accepts only them).
	if c := led.creds[key.WorkerID()]; c == "" || c != resp.CountersignToken || m.CountersignToken() != c {
		t.Errorf("countersign credential: ledger %q, answer %q, worker %q", c, resp.CountersignToken, m.CountersignToken())
	}
}

func TestRegistrationDisabled(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.do(t, "POST", "/v1/workers/challenge", "", `{}`)
	if body := readAll(t, resp); resp.StatusCode != 404 || !strings.Contains(body, "registration_disabled") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}
