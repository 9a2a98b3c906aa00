package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

var (
	metricRef  = regexp.MustCompile(`\b(?:tollgate|gen_ai|http_server)_[a-z_]+`)
	labelNames = map[string]bool{"gen_ai_request_model": true, "gen_ai_token_type": true, "gen_ai_operation_name": true}
)

// TestGrafanaDashboard checks deploy/grafana-tollgate.json against a real
// scrape: it parses, has a Prometheus datasource variable, queries only
// series Tollgate exports, and shows every metric family it exports.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana-tollgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct{ Name, Type, Query any }
		}
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	hasDS := false
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("dashboard has no Prometheus datasource variable")
	}

	p := metricsProvider(t)
	recordTraffic(context.Background(), p.Metrics())
	var buf bytes.Buffer
	if err := p.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	series := map[string]bool{}
	families := map[string]bool{}
	for _, line := range strings.Split(buf.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(name)[0]] = true
		} else if line != "" && !strings.HasPrefix(line, "#") {
			series[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}
	used := map[string]bool{}
	for _, panel := range dash.Panels {
		for _, tg := range panel.Targets {
			for _, ref := range metricRef.FindAllString(tg.Expr, -1) {
				if labelNames[ref] {
					continue
				}
				if !series[ref] {
					t.Errorf("panel %q queries %s, which Tollgate does not export", panel.Title, ref)
				}
				used[ref] = true
			}
		}
	}
	for f := range families {
		// The standard Go runtime and process collectors' families: the
		// dashboard charts the few that matter (goroutines, RSS, heap, fds).
		if f == "target_info" || strings.HasPrefix(f, "go_") || strings.HasPrefix(f, "process_") {
			continue
		}
		found := false
		for u := range used {
			if strings.HasPrefix(u, f) {
				found = true
			}
		}
		if !found {
			t.Errorf("metric family %s has no panel", f)
		}
	}
}
