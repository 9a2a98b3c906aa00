package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGatewayFlagsLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:9999\napi_keys: [{id: file, key: sk-from-file}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		flags   gatewayFlags
		env     map[string]string
		check   func(t *testing.T, listen string, keys []string, tokens int)
		wantErr string
	}{
		{"defaults", gatewayFlags{}, nil, func(t *testing.T, listen string, keys []string, tokens int) {
			if listen != "127.0.0.1:8080" || len(keys) != 0 || tokens != 0 {
				t.Errorf("listen %q keys %v tokens %d", listen, keys, tokens)
			}
		}, ""},
		{"file then flags", gatewayFlags{configPath: file, listen: "127.0.0.1:7777", apiKey: "sk-from-flag"}, nil, func(t *testing.T, listen string, keys []string, _ int) {
			if listen != "127.0.0.1:7777" || strings.Join(keys, ",") != "file,default" {
				t.Errorf("listen %q keys %v", listen, keys)
			}
		}, ""},
		{"environment", gatewayFlags{}, map[string]string{"TOLLGATE_API_KEY": "sk-from-env", "TOLLGATE_PROVIDER_TOKEN": "pt-0123456789abcdef"}, func(t *testing.T, _ string, keys []string, tokens int) {
			if len(keys) != 1 || tokens != 1 {
				t.Errorf("keys %v tokens %d", keys, tokens)
			}
		}, ""},
		{"bad listen", gatewayFlags{listen: "nowhere"}, nil, nil, "listen"},
		{"short provider token", gatewayFlags{providerToken: "short"}, nil, nil, "provider_tokens[0]"},
		{"missing file", gatewayFlags{configPath: filepath.Join(dir, "nope.yaml")}, nil, nil, "nope.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TOLLGATE_API_KEY", tc.env["TOLLGATE_API_KEY"])
			t.Setenv("TOLLGATE_ADMIN_KEY", "")
			t.Setenv("TOLLGATE_PROVIDER_TOKEN", tc.env["TOLLGATE_PROVIDER_TOKEN"])
			cfg, err := tc.flags.load()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, k := range cfg.APIKeys {
				keys = append(keys, k.ID)
			}
			tc.check(t, cfg.Listen, keys, len(cfg.ProviderTokens))
		})
	}
}
