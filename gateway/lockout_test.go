package gateway

import (
	"context"
	"testing"

	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// The attack: anyone who can reach the gateway asks for registration
// challenges faster than they expire, filling the table, so that no real
// worker can get one (and so cannot register). Challenges now go only to
// callers presenting a provider token; the flood gets 401s and the worker
// registers.
func TestChallengeFloodCannotLockOutWorkers(t *testing.T) {
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}, OpenRegistration: true, MaxChallenges: 50})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar = &fakeRegistry{}, registrar })
	for i := range 200 {
		key := ""
		if i%2 == 1 {
			key = "pt-guessed-0000000000" // a wrong token is no better
		}
		resp := h.do(t, "POST", workers.PathChallenge, key, `{}`)
		readAll(t, resp)
	}
	wkey, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := workers.NewAgent(workers.AgentConfig{WorkerID: wkey.WorkerID(), Engine: modelsOnly{}})
	defer agent.Close()
	m, err := workers.NewRegisterer(workers.MemberConfig{GatewayURL: "http://" + h.ln.Addr().String(), ProviderToken: providerToken,
		Key: wkey, AdvertiseURL: "http://127.0.0.1:9", Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(context.Background()); err != nil {
		t.Fatalf("a real worker could not register after the flood: %v", err)
	}
}
