package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// linkGateway is a gateway harness serving a worker link with limits.
func linkGateway(t *testing.T, limits workerlink.Limits) (*harness, *fakeRegistry, *workerlink.Server, string) {
	t.Helper()
	reg := &fakeRegistry{}
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar = reg, registrar })
	link, err := workerlink.NewServer(workerlink.ServerConfig{Insecure: true, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go link.Serve(ln)
	go h.srv.Serve(link.Streams())
	t.Cleanup(func() { link.Close() })
	return h, reg, link, ln.Addr().String()
}

// linkMember dials in to addr and returns a registerer over the link that
// advertises advertise.
func linkMember(t *testing.T, addr string, key *keys.Key, advertise string) *workers.Registerer {
	t.Helper()
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: modelsOnly{}})
	t.Cleanup(func() { agent.Close() })
	// No redial: a session the gateway closes stays closed.
	d, err := workerlink.NewDialer(workerlink.DialerConfig{Addr: addr, Insecure: true, MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go d.Run(ctx)
	tr := workers.NewTransport()
	tr.DialContext = d.DialContext
	m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://gateway", ProviderToken: providerToken, Key: key,
		AdvertiseURL: advertise, Agent: agent, HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newKey(t *testing.T) *keys.Key {
	t.Helper()
	k, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A session on which a worker registered keeps its slot past the link's
// register deadline (the gateway tells the link of the registration); one
// that only dialled in is closed at it. Without the mark, every link
// worker would lose its session RegisterTimeout after dialling in.
func TestLinkRegistrationKeepsSession(t *testing.T) {
	_, reg, link, addr := linkGateway(t, workerlink.Limits{RegisterTimeout: 300 * time.Millisecond})
	key := newKey(t)
	m := linkMember(t, addr, key, workers.LinkOutbound)
	ctx := context.Background()
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	url := reg.get(key.WorkerID()).URL

	// A second connection that never registers.
	idle, err := workerlink.NewDialer(workerlink.DialerConfig{Addr: addr, Insecure: true, MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithCancel(context.Background())
	defer icancel()
	go idle.Run(ictx)

	deadline := time.Now().Add(10 * time.Second)
	for seen2 := false; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n := link.Sessions()
		seen2 = seen2 || n == 2
		if seen2 && n == 1 {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // past the registered session's deadline too
	if n := link.Sessions(); n != 1 {
		t.Fatalf("%d sessions past the register deadline, want the registered one", n)
	}
	if err := m.Heartbeat(ctx, false); err != nil {
		t.Fatalf("heartbeat after the register deadline: %v", err)
	}
	if got := reg.get(key.WorkerID()).URL; got != url {
		t.Fatalf("worker moved to %q from %q", got, url)
	}
}

// Attack: a worker registered over the link keeps heartbeating on the
// plain API port after its link went down. The heartbeat was accepted (the
// session check ran only on link streams), so the worker stayed in
// rotation past the heartbeat expiry with no link to carry its batches. A
// link worker's heartbeats count only on the session it registered on.
func TestLinkWorkerHeartbeatOffLinkRefused(t *testing.T) {
	h, _, _, addr := linkGateway(t, workerlink.Limits{})
	key := newKey(t)
	m := linkMember(t, addr, key, workers.LinkOutbound)
	ctx := context.Background()
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	body := `{"worker_id":"` + key.WorkerID() + `","time":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","gpus":[],"in_flight":0}`
	req, _ := http.NewRequest("POST", "http://"+h.ln.Addr().String()+workers.PathHeartbeat, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.SessionToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(raw), workers.CodeUnknownWorker) {
		t.Fatalf("heartbeat of a link worker on the API port: %d %s, want 401 %s", resp.StatusCode, raw, workers.CodeUnknownWorker)
	}
	if err := m.Heartbeat(ctx, false); err != nil {
		t.Fatalf("heartbeat on its own link: %v", err)
	}
}

// Attack: a worker on the link registers with a URL of its choosing — an
// internal address (SSRF: the gateway would POST batches there) or another
// worker's link://<session> (its batches would go to that worker). The
// gateway records the session the registration came on, whatever the
// (signed) URL said.
func TestLinkRegistrationURLIsTheSession(t *testing.T) {
	_, reg, _, addr := linkGateway(t, workerlink.Limits{})
	victim := newKey(t)
	if _, err := linkMember(t, addr, victim, workers.LinkOutbound).Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	victimURL := reg.get(victim.WorkerID()).URL
	for _, advertise := range []string{"http://169.254.169.254:80", "http://127.0.0.1:6379", victimURL} {
		key := newKey(t)
		if _, err := linkMember(t, addr, key, advertise).Register(context.Background()); err != nil {
			t.Fatalf("register advertising %s: %v", advertise, err)
		}
		got := reg.get(key.WorkerID()).URL
		if got == advertise || got == victimURL || !strings.HasPrefix(got, workers.LinkScheme+"://") {
			t.Fatalf("a link worker advertising %s was recorded at %s (victim at %s)", advertise, got, victimURL)
		}
	}
}

// A worker that registers again on a new link leaves its old session to be
// closed (the gateway names the worker to the link), so one key cannot
// hold a slot per session it ever registered on.
func TestLinkReRegistrationClosesOldSession(t *testing.T) {
	_, reg, link, addr := linkGateway(t, workerlink.Limits{})
	key := newKey(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := linkMember(t, addr, key, workers.LinkOutbound).Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for link.Sessions() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing else closes
	if n := link.Sessions(); n != 1 {
		t.Fatalf("%d sessions after registering on 3 in turn, want the last", n)
	}
	if _, ok := workers.LinkSession(reg.get(key.WorkerID()).URL); !ok {
		t.Fatal("the worker is not on a link")
	}
}
