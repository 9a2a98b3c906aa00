package gateway

import (
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/workers"
)

// Admin and worker routes must refuse a body with anything after its one
// JSON value (the old decoder stopped at the first value and accepted
// `{...} trailing garbage`).
func TestAdminBodyTrailingGarbage(t *testing.T) {
	registrar, err := workers.NewRegistrar(workers.RegistrarConfig{ProviderTokens: []string{providerToken}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, d *Deps) { d.Registry, d.Registrar = &fakeRegistry{}, registrar })
	for _, body := range []string{
		`{"name":"tiny","digest":"` + strings.Repeat("ab", 32) + `"} trailing`,
		`{"name":"tiny","digest":"` + strings.Repeat("ab", 32) + `"}{"name":"x"}`,
	} {
		resp := h.do(t, "POST", "/v1/admin/models", adminKey, body)
		if b := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(b, "invalid_json") {
			t.Errorf("%q: %d %s, want 400 invalid_json", body, resp.StatusCode, b)
		}
	}
}

// Chat bodies refuse a duplicate key inside the rich fields as Responses
// bodies do: 400 invalid_json naming the member.
func TestChatDuplicateKeyRefused(t *testing.T) {
	h := newHarness(t, nil)
	for body, param := range map[string]string{
		`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","type":"string"}}}]}`: "tools[0].function.parameters.type",
		`{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`:                                                                   "messages[0].content[0].text",
	} {
		resp := h.do(t, "POST", "/v1/chat/completions", testKey, body)
		if b := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(b, `"code":"invalid_json"`) || !strings.Contains(b, `"param":"`+param+`"`) {
			t.Errorf("%s: %d %s, want 400 invalid_json param %s", body, resp.StatusCode, b, param)
		}
	}
}
