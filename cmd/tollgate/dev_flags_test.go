package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
)

// `tollgate dev --config FILE` must serve on the file's listen unless
// --listen is given; the flag's default used to win over the file.
func TestDevListenFromConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:9191\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file, no flag", nil, "127.0.0.1:8080"},
		{"file", []string{"--config", file}, "127.0.0.1:9191"},
		{"file and flag", []string{"--config", file, "--listen", "127.0.0.1:7070"}, "127.0.0.1:7070"},
		{"flag", []string{"--listen", "127.0.0.1:7071"}, "127.0.0.1:7071"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o devOptions
			if err := devFlagSet(&o).Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := o.gateway.load()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Listen != tc.want {
				t.Errorf("listen %q, want %q", cfg.Listen, tc.want)
			}
		})
	}
}

// The key `tollgate dev` prints is one it made and that works, not the
// last client key of the config file (a secret of the file's, and possibly
// stored only as a hash).
func TestDevPrintsItsOwnKey(t *testing.T) {
	t.Setenv("TOLLGATE_API_KEY", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(file, []byte("api_keys: [{id: file, key: sk-from-file-0123456789}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := devOptions{ln: ln, logger: slog.New(slog.DiscardHandler)}
	o.gateway = gatewayFlags{configPath: file, data: dir, noReceipts: true, noProver: true}
	o.engine = engineFlags{kind: "sim", profile: "sim-tiny", timeScale: 1}
	d, err := startDev(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	if !strings.HasPrefix(d.apiKey, "sk-dev-") {
		t.Errorf("dev prints API key %q, want its own sk-dev- key", d.apiKey)
	}
	for _, key := range []string{d.apiKey, "sk-from-file-0123456789"} {
		req, _ := http.NewRequest("GET", d.URL()+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET /v1/models with %q: %d, want 200", key, resp.StatusCode)
		}
	}
}

func TestPprofFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--pprof"}, true}} {
		var o devOptions
		if err := devFlagSet(&o).Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := o.gateway.load()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Pprof != tc.want {
			t.Errorf("%v: pprof %v, want %v", tc.args, cfg.Pprof, tc.want)
		}
	}
}

func TestCORSOriginsFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string
		wantErr string
	}{
		{args: nil},
		{args: []string{"--cors-origins", "https://app.example.com, http://localhost:5173"}, want: []string{"https://app.example.com", "http://localhost:5173"}},
		{args: []string{"--cors-origins", "*"}, want: []string{"*"}},
		{args: []string{"--cors-origins", "app.example.com"}, wantErr: "cors.allowed_origins[0]"},
		{args: []string{"--cors-origins", "https://a.example,*"}, wantErr: "cors.allowed_origins[1]"},
	} {
		var o devOptions
		if err := devFlagSet(&o).Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := o.gateway.load()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want it to name %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.CORS.AllowedOrigins; strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v: origins %q, want %q", tc.args, got, tc.want)
		}
	}
}

// The backlog's age feeds the gauge and, past max_pending_age, fails
// /readyz; it is read from the ledger at most every backlogAgeTTL.
func TestBacklogAgeReadiness(t *testing.T) {
	st, err := openBoltStore(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recorded := time.Unix(1_800_000_000, 0)
	l := ledger.New(st, ledger.Options{Clock: clock.NewFake(recorded)})
	now := recorded.Add(time.Minute)
	b := &backlogAge{ledger: l, now: func() time.Time { return now }}
	ready := b.readiness(10 * time.Minute)
	if age, err := b.get(context.Background()); err != nil || age != 0 || ready() != nil {
		t.Fatalf("empty ledger: age %v err %v ready %v", age, err, ready())
	}
	now = now.Add(backlogAgeTTL)
	c := &task.Completion{RequestID: "r", WorkerID: "0x" + strings.Repeat("0", 63) + "1", Model: "m", ModelDigest: strings.Repeat("ab", 32),
		RequestDigest: strings.Repeat("cd", 32), ResponseDigest: strings.Repeat("ef", 32), Subject: "k", Time: recorded}
	if err := l.Record(context.Background(), "rcpt_1", c); err != nil {
		t.Fatal(err)
	}
	if age, _ := b.get(context.Background()); age != time.Minute+backlogAgeTTL {
		t.Errorf("age %v, want %v", age, time.Minute+backlogAgeTTL)
	}
	now = now.Add(20 * time.Minute)
	if err := ready(); err == nil || !strings.Contains(err.Error(), "max_pending_age") {
		t.Errorf("readiness with a 21-minute backlog: %v", err)
	}
}
