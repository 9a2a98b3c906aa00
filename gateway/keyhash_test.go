package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sha256Entry(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(h[:])
}

// Keys stored as "sha256:<hex>" authenticate the secret whose digest they
// are, and the stored string itself is no credential (a leaked config file
// must not be a leaked key).
func TestHashedKeys(t *testing.T) {
	const client, admin = "sk-hashed-client-secret", "sk-hashed-admin-secret"
	h := newHarness(t, func(c *Config, _ *Deps) {
		c.APIKeys = append(c.APIKeys, APIKey{ID: "hashed", Key: "sha256:" + strings.ToUpper(sha256Entry(client)[7:])})
		c.AdminKeys = append(c.AdminKeys, sha256Entry(admin))
	})
	tests := []struct {
		name, path, key string
		status          int
	}{
		{"client secret", "/v1/models", client, 200},
		{"stored digest is no client key", "/v1/models", sha256Entry(client), 401},
		{"admin secret", "/v1/workers", admin, 200},
		{"stored digest is no admin key", "/v1/workers", sha256Entry(admin), 401},
		{"client secret on admin route", "/v1/workers", client, 403},
		{"plain key still works", "/v1/models", testKey, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, "GET", tc.path, tc.key, "")
			if b := readAll(t, resp); resp.StatusCode != tc.status {
				t.Errorf("%d %s, want %d", resp.StatusCode, b, tc.status)
			}
		})
	}
}

func TestHashedKeyMalformed(t *testing.T) {
	for _, key := range []string{"sha256:", "sha256:abcd", "sha256:" + strings.Repeat("zz", 32), "sha256:" + strings.Repeat("ab", 33)} {
		if _, err := New(Config{APIKeys: []APIKey{{ID: "k", Key: key}}}, Deps{Dispatcher: &fakeDispatcher{}}); err == nil {
			t.Errorf("api key %q accepted", key)
		}
		if _, err := New(Config{AdminKeys: []string{key}}, Deps{Dispatcher: &fakeDispatcher{}}); err == nil {
			t.Errorf("admin key %q accepted", key)
		}
	}
	// The same secret in plain and as its digest is one key twice.
	if _, err := New(Config{APIKeys: []APIKey{{ID: "a", Key: "sk-same-secret"}, {ID: "b", Key: sha256Entry("sk-same-secret")}}}, Deps{Dispatcher: &fakeDispatcher{}}); err == nil {
		t.Error("a plain key and its digest both accepted")
	}
}
