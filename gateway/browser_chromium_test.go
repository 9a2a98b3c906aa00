package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/cors"
)

// browserPage calls the gateway at %[1]s with fetch() from its own origin,
// as a web app would with the OpenAI SDK's headers: one chat completion,
// then a streamed one read chunk by chunk, and writes what happened into
// <pre id="out">, which the test reads back from the dumped DOM.
const browserPage = `<!doctype html><html><body><pre id="out">running</pre><script>
const gw = %[1]q, key = %[2]q;
const headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json",
  "x-stainless-os": "Linux", "x-stainless-lang": "js", "x-stainless-retry-count": "0"};
const lines = [];
async function run() {
  try {
    const r = await fetch(gw + "/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "tiny", messages: [{role: "user", content: "hi"}]})});
    const j = await r.json();
    lines.push("chat:" + r.status + ":" + j.choices[0].message.content + ":receipt=" + (r.headers.get("X-Tollgate-Receipt") ? "yes" : "no"));
  } catch (e) { lines.push("chat:error:" + e); }
  try {
    const r = await fetch(gw + "/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "tiny", stream: true, messages: [{role: "user", content: "hi"}]})});
    const reader = r.body.getReader(), dec = new TextDecoder();
    let text = "", sse = "";
    for (;;) { const {done, value} = await reader.read(); if (done) break; sse += dec.decode(value, {stream: true}); }
    for (const l of sse.split("\n")) {
      if (!l.startsWith("data: ") || l === "data: [DONE]") continue;
      const c = JSON.parse(l.slice(6)).choices;
      if (c && c[0] && c[0].delta && c[0].delta.content) text += c[0].delta.content;
    }
    lines.push("stream:" + r.status + ":" + text + ":done=" + sse.includes("data: [DONE]"));
  } catch (e) { lines.push("stream:error:" + e); }
  document.getElementById("out").textContent = lines.join("\n") + "\nfinished";
}
run();
</script></body></html>`

func chromiumBin() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowserCORS loads a page from one origin (its own HTTP server on
// another port) in headless Chromium; the page calls the gateway with
// fetch(), which makes Chromium send a real preflight (Authorization and
// x-stainless-* headers). With the page's origin allowed, the chat and the
// stream succeed and the page can read X-Tollgate-Receipt; with only
// another origin allowed, Chromium blocks both ("Failed to fetch").
func TestBrowserCORS(t *testing.T) {
	bin := chromiumBin()
	if bin == "" {
		t.Skip("chromium is not installed (apt-get install chromium); skipping the browser CORS check")
	}
	var pageHTML atomic.Value // the test writes it, the page server reads it
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, pageHTML.Load())
	}))
	defer page.Close()
	for _, tc := range []struct {
		name    string
		allowed []string
		want    []string
	}{
		{name: "allowed", allowed: []string{page.URL},
			want: []string{"chat:200:Hello world:receipt=yes", "stream:200:Hello world:done=true"}},
		{name: "star", allowed: []string{"*"},
			want: []string{"chat:200:Hello world:receipt=yes", "stream:200:Hello world:done=true"}},
		{name: "other origin", allowed: []string{"https://app.example", strings.Replace(page.URL, "127.0.0.1", "localhost", 1)},
			want: []string{"chat:error:TypeError: Failed to fetch", "stream:error:TypeError: Failed to fetch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config, _ *Deps) { c.CORS = cors.Config{AllowedOrigins: tc.allowed} })
			pageHTML.Store(fmt.Sprintf(browserPage, "http://"+h.ln.Addr().String(), testKey))
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
				"--user-data-dir="+filepath.Join(dir, "profile"), "--virtual-time-budget=20000", "--dump-dom", page.URL)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("chromium: %v\n%s", err, out)
			}
			dom := string(out)
			if !strings.Contains(dom, "finished") {
				t.Fatalf("the page did not finish:\n%s", dom)
			}
			for _, w := range tc.want {
				if !strings.Contains(dom, w) {
					t.Errorf("page output lacks %q:\n%s", w, dom)
				}
			}
		})
	}
}
