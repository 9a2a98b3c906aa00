package soak

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/redistest"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/zk"
)

// outcome is what one client saw of one request.
type outcome struct {
	key     string // the API key ID that made it
	stream  bool
	aborted bool   // the client means to hang up after a few tokens
	hungUp  bool   // and did
	status  int    // 0: the request failed at the transport
	receipt string // X-Tollgate-Receipt, if any
	tokens  int    // content deltas received (streamed)
	text    string // the answer's text as received
	finish  string // the answer's finish reason
	usage   *struct{ Prompt, Completion uint64 }
	done    bool   // streamed: [DONE] after a finish reason
	ending  string // streamed: "done", "done without finish reason", "eof" or "hung up"
	errEvt  bool   // streamed: an SSE error event
	errCode string // the error's code (JSON error or SSE error event)
}

// TestBillingUnderChaos is the billing-integrity acceptance run (issue
// 15): a Redis-mode gateway, two simulator workers and two provers, all
// real `tollgate` processes, serve two tenants' mixed load (JSON answers,
// streams, and streams whose client hangs up after a few tokens) while
// the workers are killed (kill -9 and SIGTERM) in the middle of their
// streams and the provers are killed in the middle of their batches, and
// restarted. When every receipt is settled it checks, from the clients'
// side against the ledger's export:
//
//   - every request that returned 200, or streamed at least one token, has
//     exactly one ledger entry under the ID its client was given: a
//     proven, verifying record of its own tenant, or — only for a stream
//     cut by its worker's death, which leaves no worker record to prove —
//     a void receipt saying so;
//   - no request ID, and no leaf, is in two entries; no entry exists that
//     no client was given;
//   - every record's subject is the key that made the request;
//   - nothing failed, nothing is left pending;
//   - a stream that failed before its first token is not billed.
func TestBillingUnderChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run skipped in -short mode")
	}
	n := envInt("TOLLGATE_CHAOS_N", 600)
	conc := envInt("TOLLGATE_CHAOS_CONCURRENCY", 16)
	root := t.TempDir()
	bin := tollgateBinary(t, root)
	keyDir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(keyDir, zk.Capacities[0]); err != nil {
		t.Fatal(err)
	}
	r := redistest.New(t)
	logs, err := os.Create(filepath.Join(root, "processes.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			if len(b) > 200_000 {
				b = b[len(b)-200_000:]
			}
			t.Logf("processes' log (tail):\n%s", b)
		}
	})

	keys := map[string]string{"alice": "sk-chaos-alice-0123456789", "bob": "sk-chaos-bob-0123456789"}
	const providerToken = "pt-chaos-0123456789abcdef"
	gwAddr := freePort(t)
	cfg := fmt.Sprintf("listen: %q\ndata_dir: %q\napi_keys: [{id: alice, key: %q}, {id: bob, key: %q}]\nprovider_tokens: [%q]\nopen_registration: true\nlog: {level: info}\nredis: {url: %q, prefix: %q, claim_idle: 3s}\n",
		gwAddr, filepath.Join(root, "gateway"), keys["alice"], keys["bob"], providerToken, r.URL, r.Prefix)
	cfgPath := filepath.Join(root, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := &proc{t: t, name: "gateway", bin: bin, log: logs, args: []string{"gateway", "--config", cfgPath, "--no-prover", "--log-format", "text"}}
	var workers []*proc
	for i := range 2 {
		// sim-tiny at time scale 8: ~8 ms a token, so a 40-token answer
		// takes about a third of a second and a kill lands mid-stream.
		workers = append(workers, &proc{t: t, name: fmt.Sprintf("worker%d", i), bin: bin, log: logs, args: []string{"worker",
			"--engine", "sim", "--profile", "sim-tiny", "--time-scale", "8",
			"--gateway", "http://" + gwAddr, "--listen", freePort(t), "--data", filepath.Join(root, fmt.Sprintf("worker%d", i)),
			"--provider-token", providerToken, "--max-concurrency", "64", "--log-format", "text"}})
	}
	var provers []*proc
	for _, name := range []string{"p1", "p2"} {
		provers = append(provers, &proc{t: t, name: name, bin: bin, log: logs, args: []string{"prover",
			"--redis", r.URL, "--redis-prefix", r.Prefix, "--keys", keyDir, "--allow-dev-keys",
			"--name", name, "--claim-idle", "3s", "--max-age", "300ms", "--interval", "100ms"}})
	}
	all := append(append([]*proc{gw}, workers...), provers...)
	startAll(all)
	defer stopAll(all)
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	base := "http://" + gwAddr
	waitHTTP(t, client, base+"/readyz", 2*time.Minute)
	waitModels(t, client, base, keys["alice"], 2*time.Minute)
	l := openLedger(t, r, keyDir)
	ctx := context.Background()
	// Both workers admitted before the load, so every batch is proven
	// against the registry root the checks below verify with.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		pairs, _, err := l.Admitted(ctx)
		if err == nil && len(pairs) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("both workers not admitted after 2 minutes: %v %v", pairs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Load: n requests over conc clients; tenant, kind and hang-ups are
	// fixed by the request's index.
	outcomes := make([]outcome, n)
	var next, finished atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				o := &outcomes[i]
				o.key = []string{"alice", "bob"}[i%2]
				o.stream = i%3 != 0
				o.aborted = o.stream && i%7 == 1
				sendChaosRequest(client, base, keys[o.key], i, o)
				finished.Add(1)
			}
		})
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()

	// Chaos at fractions of the load: each kill lands while tens of
	// requests are in flight on the worker and batches are being proven.
	chaos := []struct {
		at   float64
		what string
		do   func()
	}{
		{0.15, "kill -9 worker0 mid-stream, restart", func() { workers[0].stop(syscall.SIGKILL); workers[0].start() }},
		{0.30, "kill -9 prover p1 mid-batch, restart", func() { provers[0].stop(syscall.SIGKILL); provers[0].start() }},
		{0.45, "SIGTERM worker1 (drain), restart", func() { workers[1].stop(syscall.SIGTERM); workers[1].start() }},
		{0.60, "kill -9 worker1 mid-stream and prover p2 mid-batch, restart", func() {
			workers[1].stop(syscall.SIGKILL)
			provers[1].stop(syscall.SIGKILL)
			workers[1].start()
			provers[1].start()
		}},
		{0.75, "kill -9 worker0 mid-stream, restart", func() { workers[0].stop(syscall.SIGKILL); workers[0].start() }},
		{0.85, "SIGTERM prover p1, kill -9 prover p2, restart", func() {
			provers[0].stop(syscall.SIGTERM)
			provers[1].stop(syscall.SIGKILL)
			provers[0].start()
			provers[1].start()
		}},
	}
	for _, c := range chaos {
		for finished.Load() < int64(c.at*float64(n)) {
			select {
			case <-loadDone:
			case <-time.After(5 * time.Millisecond):
			}
		}
		t.Logf("chaos at %d/%d requests: %s", finished.Load(), n, c.what)
		fmt.Fprintf(logs, "\n=== chaos: %s\n", c.what)
		c.do()
	}
	<-loadDone

	// Every receipt ID handed out resolves (a hung-up stream's record, or
	// a void, is written after its client has gone, within the stop
	// grace), then every receipt settles: proven, failed or void.
	deadline := time.Now().Add(4 * time.Minute)
	for _, o := range outcomes {
		for o.receipt != "" {
			if _, err := l.Receipt(ctx, o.receipt); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("receipt %s handed out does not resolve after the load", o.receipt)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for {
		c, err := l.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.Pending == 0 {
			t.Logf("settled: %+v", c)
			if c.Failed != 0 {
				t.Errorf("%d receipts failed", c.Failed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipts still pending after 5 minutes: %+v", c)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// The ledger's whole export.
	v := newVerifier(t, ctx, l)
	entries := map[string]*receipts.Receipt{}
	byRequest, byLeaf := map[string]string{}, map[string]string{}
	for _, rc := range exportAll(t, ctx, l) {
		if _, dup := entries[rc.ID]; dup {
			t.Errorf("receipt %s exported twice", rc.ID)
		}
		entries[rc.ID] = rc
		if prev, dup := byRequest[rc.RequestID]; dup {
			t.Errorf("request %s has two entries: %s and %s", rc.RequestID, prev, rc.ID)
		}
		byRequest[rc.RequestID] = rc.ID
		if rc.Status == receipts.StatusVoid {
			continue
		}
		if prev, dup := byLeaf[rc.Leaf]; dup {
			t.Errorf("leaf %s is in two receipts: %s and %s", rc.Leaf, prev, rc.ID)
		}
		byLeaf[rc.Leaf] = rc.ID
		if rc.Status != receipts.StatusProven {
			t.Errorf("receipt %s is %s (%s)", rc.ID, rc.Status, rc.Error)
			continue
		}
		if err := v.verify(rc); err != nil {
			t.Errorf("receipt %s does not verify: %v", rc.ID, err)
		}
	}

	// The clients' side against it.
	var stats struct{ ok, streamed, aborted, cancelled, cut, voided, hungUpVoid, failed int }
	given := map[string]bool{}
	for i, o := range outcomes {
		if o.receipt != "" {
			if given[o.receipt] {
				t.Errorf("request %d: receipt ID %s handed to two requests", i, o.receipt)
			}
			given[o.receipt] = true
		}
		desc := fmt.Sprintf("request %d (%s, stream=%v, status %d, %d tokens, ending %q, error %q)", i, o.key, o.stream, o.status, o.tokens, o.ending, o.errCode)
		served := (!o.stream && o.status == 200) || (o.stream && o.tokens > 0)
		e := entries[o.receipt]
		if !served {
			// Refused or failed before any token: the gateway is never
			// killed, so the client always gets an answer, and the only
			// failures are the killed workers' (503, or 502 when the link
			// broke under a request).
			stats.failed++
			if o.status != 502 && o.status != 503 && !(o.status == 200 && o.errEvt) {
				t.Errorf("%s: not a worker failure", desc)
			}
			if e != nil && e.Status != receipts.StatusVoid {
				t.Errorf("%s is billed before any token: %s %s %d+%d tokens", desc, e.ID, e.Status, e.PromptTokens, e.CompletionTokens)
			}
			if e == nil && o.receipt != "" {
				t.Errorf("%s: receipt %s handed out does not resolve", desc, o.receipt)
			}
			continue
		}
		switch {
		case o.receipt == "":
			t.Errorf("%s was served without a receipt ID", desc)
			continue
		case e == nil:
			t.Errorf("%s: receipt %s has no ledger entry", desc, o.receipt)
			continue
		}
		if prefix := fmt.Sprintf("chaos-%d.", i); !strings.HasPrefix(e.RequestID, prefix) {
			t.Errorf("%s: receipt %s is of request %q, not one of %q", desc, e.ID, e.RequestID, prefix+"…")
		}
		if e.Subject != o.key {
			t.Errorf("%s made with key %q: receipt %s names %q", desc, o.key, e.ID, e.Subject)
		}
		if e.Status == receipts.StatusVoid {
			// Only a stream its worker's death cut short: the client saw
			// an error event, and no worker record exists to prove.
			// A hung-up stream is void only when its worker died before
			// it sent the record of what it generated: a few, around a
			// kill (counted and bounded below).
			switch {
			case o.hungUp:
				stats.hungUpVoid++
			case !o.stream || o.done || !o.errEvt || !strings.Contains(e.Error, "worker"):
				t.Errorf("%s: receipt %s is void (%s)", desc, e.ID, e.Error)
			}
			stats.voided++
			continue
		}
		if o.stream && e.CompletionTokens < uint64(o.tokens) {
			t.Errorf("%s: receipt %s bills %d completion tokens", desc, e.ID, e.CompletionTokens)
		}
		whole := !o.stream || o.done
		if whole {
			// A whole answer: billed exactly as the client was told, for
			// exactly the text it received.
			if o.finish != "stop" && o.finish != "length" || e.FinishReason != o.finish {
				t.Errorf("%s: finish reason %q, receipt %s says %q", desc, o.finish, e.ID, e.FinishReason)
			}
			if o.text == "" {
				t.Errorf("%s: an empty answer", desc)
			}
			if o.usage == nil || o.usage.Prompt != e.PromptTokens || o.usage.Completion != e.CompletionTokens {
				t.Errorf("%s: usage %+v, receipt %s bills %d+%d", desc, o.usage, e.ID, e.PromptTokens, e.CompletionTokens)
			}
			if d := task.ResponseDigest(o.text, nil); e.ResponseDigest != hex.EncodeToString(d[:]) {
				t.Errorf("%s: receipt %s's response digest is not that of the text received", desc, e.ID)
			}
		}
		switch {
		case o.hungUp:
			stats.aborted++
			switch e.FinishReason {
			case "cancelled":
				stats.cancelled++
			case "stop", "length": // finished before the hang-up reached the worker
				if e.CompletionTokens > uint64(o.tokens)+8 {
					t.Errorf("%s hung up: receipt %s bills a whole answer of %d tokens", desc, e.ID, e.CompletionTokens)
				}
			default:
				t.Errorf("%s hung up mid-stream: receipt %s has finish reason %q", desc, e.ID, e.FinishReason)
			}
		case whole && o.stream:
			stats.streamed++
		case whole:
			stats.ok++
		default:
			// Cut by a failure after tokens: an error event, and a
			// record that says it ended early.
			stats.cut++
			if !o.errEvt || (e.FinishReason != "error" && e.FinishReason != "cancelled") {
				t.Errorf("%s: receipt %s has finish reason %q", desc, e.ID, e.FinishReason)
			}
		}
	}
	for id, e := range entries {
		if !given[id] {
			t.Errorf("ledger entry %s (%s, request %s, %s) was handed to no client", id, e.Status, e.RequestID, e.Subject)
		}
		if e.Subject != "alice" && e.Subject != "bob" {
			t.Errorf("receipt %s has subject %q", e.ID, e.Subject)
		}
	}
	// The gateway refused no honest worker's record.
	if resp, err := client.Get(base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "tollgate_worker_records_refused_total") && !strings.HasSuffix(line, " 0") {
				t.Errorf("the gateway refused honest records: %s", line)
			}
		}
	}
	t.Logf("%d requests: %d JSON answers and %d whole streams billed, %d hung-up (%d cancelled) and %d cut streams billed for what was generated, %d void (stream cut by a killed worker; %d of them hung up), %d failed before any token; %d ledger entries, %d distinct leaves",
		n, stats.ok, stats.streamed, stats.aborted, stats.cancelled, stats.cut, stats.voided, stats.hungUpVoid, stats.failed, len(entries), len(byLeaf))
	if stats.voided+stats.cut+stats.failed == 0 {
		t.Error("no request was hit by a worker kill: the chaos did not land mid-request")
	}
	if stats.hungUpVoid > 2*3 { // two per kill -9 of a worker
		t.Errorf("%d hung-up streams are void, not billed for what was generated", stats.hungUpVoid)
	}
	if stats.failed > n/5 {
		t.Errorf("%d of %d requests failed", stats.failed, n)
	}
	if stats.aborted == 0 || stats.cancelled < stats.aborted/2 {
		t.Errorf("%d of %d hung-up streams billed as cancelled", stats.cancelled, stats.aborted)
	}
	if stats.ok == 0 || stats.streamed == 0 {
		t.Error("no request served whole")
	}
}

// sendChaosRequest sends request i with key and fills o.
func sendChaosRequest(client *http.Client, base, key string, i int, o *outcome) {
	body := fmt.Sprintf(`{"model":"sim-tiny","max_tokens":40,"stream":%v,"messages":[{"role":"user","content":"chaos %d"}]}`, o.stream, i)
	if o.stream {
		body = fmt.Sprintf(`{"model":"sim-tiny","max_tokens":40,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"chaos %d"}]}`, i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", fmt.Sprintf("chaos-%d", i))
	resp, err := client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	o.status = resp.StatusCode
	o.receipt = resp.Header.Get("X-Tollgate-Receipt")
	type usage struct {
		Prompt     uint64 `json:"prompt_tokens"`
		Completion uint64 `json:"completion_tokens"`
	}
	type apiError struct {
		Code string `json:"code"`
	}
	setUsage := func(u *usage) {
		if u != nil {
			o.usage = &struct{ Prompt, Completion uint64 }{u.Prompt, u.Completion}
		}
	}
	if !o.stream || resp.StatusCode != 200 {
		var ans struct {
			Error   *apiError `json:"error"`
			Usage   *usage    `json:"usage"`
			Choices []struct {
				Message      struct{ Content string } `json:"message"`
				FinishReason string                   `json:"finish_reason"`
			} `json:"choices"`
		}
		if json.NewDecoder(resp.Body).Decode(&ans) == nil {
			if ans.Error != nil {
				o.errCode = ans.Error.Code
			}
			if len(ans.Choices) == 1 {
				o.text, o.finish = ans.Choices[0].Message.Content, ans.Choices[0].FinishReason
			}
			setUsage(ans.Usage)
		}
		return
	}
	sc := bufio.NewScanner(resp.Body)
	var text strings.Builder
	defer func() { o.text = text.String() }()
	o.ending = "eof"
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			if strings.HasPrefix(line, "event: error") {
				o.errEvt = true
			}
			continue
		}
		if data == "[DONE]" {
			o.done = o.finish != ""
			o.ending = "done"
			if !o.done {
				o.ending = "done without finish reason"
			}
			return
		}
		var ev struct {
			Error   *apiError `json:"error"`
			Usage   *usage    `json:"usage"`
			Choices []struct {
				Delta        struct{ Content string } `json:"delta"`
				FinishReason *string                  `json:"finish_reason"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		if ev.Error != nil {
			o.errEvt, o.errCode = true, ev.Error.Code
		}
		setUsage(ev.Usage)
		for _, c := range ev.Choices {
			if c.Delta.Content != "" {
				o.tokens++
				text.WriteString(c.Delta.Content)
			}
			if c.FinishReason != nil && *c.FinishReason != "" {
				o.finish = *c.FinishReason
			}
		}
		if o.aborted && o.tokens >= 3 && o.finish == "" {
			o.hungUp, o.ending = true, "hung up"
			cancel() // the client hangs up mid-stream
			return
		}
	}
}

// waitModels waits until the gateway lists at least one model (a worker
// has registered) for key.
func waitModels(t *testing.T, client *http.Client, base, key string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		if resp, err := client.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(b), "sim-tiny") {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no model listed after %s", d)
}
