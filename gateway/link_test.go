package gateway

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/workerlink"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// TestRegistrationOverOutboundLink: a worker that dialled in registers as
// link://<its session>; after it dials in again its heartbeats on the new
// session are answered "register again", and a link:// URL is refused on
// the plain API port.
func TestRegistrationOverOutboundLink(t *testing.T) {
	reg := &fakeRegistry{}
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar = reg, registrar })
	link, err := workerlink.NewServer(workerlink.ServerConfig{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go link.Serve(ln)
	go h.srv.Serve(link.Streams())
	defer link.Close()

	key, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	dialIn := func() (*workerlink.Dialer, context.CancelFunc) {
		d, err := workerlink.NewDialer(workerlink.DialerConfig{Addr: ln.Addr().String(), Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go d.Run(ctx)
		return d, cancel
	}
	member := func(gatewayURL string, dial func(context.Context, string, string) (net.Conn, error)) *workers.Registerer {
		tr := workers.NewTransport()
		if dial != nil {
			tr.DialContext = dial
		}
		m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: gatewayURL, ProviderToken: providerToken, Key: key,
			AdvertiseURL: workers.LinkOutbound, Agent: agent, HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ctx := context.Background()

	if _, err := member("http://"+h.ln.Addr().String(), nil).Register(ctx); errCode(err) != workers.CodeInvalidRegistration {
		t.Fatalf("link:// registration on the API port: %v, want %s", err, workers.CodeInvalidRegistration)
	}

	d1, stop1 := dialIn()
	defer stop1()
	m := member("http://gateway", d1.DialContext)
	if _, err := m.Register(ctx); err != nil {
		t.Fatal(err)
	}
	w := reg.get(key.WorkerID())
	session, ok := workers.LinkSession(w.URL)
	if !ok || session == "outbound" || link.Sessions() != 1 {
		t.Fatalf("registered URL %q, want link://<session>", w.URL)
	}
	if err := m.Heartbeat(ctx, false); err != nil {
		t.Fatalf("heartbeat on its own link: %v", err)
	}

	// The link drops and the worker dials in again on a new session.
	stop1()
	d2, stop2 := dialIn()
	defer stop2()
	again := member("http://gateway", d2.DialContext)
	again.Register(ctx) // takes the session token; the URL below is checked after
	tok := again.SessionToken()
	if tok == "" {
		t.Fatal("no session token after registering again")
	}
	w2 := reg.get(key.WorkerID())
	if w2.URL == w.URL || !strings.HasPrefix(w2.URL, workers.LinkScheme+"://") {
		t.Fatalf("after dialling in again the worker is at %q (was %q)", w2.URL, w.URL)
	}
	// A heartbeat on a session other than the one the worker registered on
	// (it dialled in again and has not registered yet) is told to register
	// again.
	h.srv.links.Store(key.WorkerID(), "some-other-session")
	if err := again.Heartbeat(ctx, false); errCode(err) != workers.CodeUnknownWorker {
		t.Fatalf("heartbeat on a session the worker did not register on: %v, want %s", err, workers.CodeUnknownWorker)
	}
}
