package workers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/obs"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

// syncBuffer is a log sink tests can read while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// produce runs one batch of chat tasks on a and returns their completions.
func produce(t *testing.T, a *workers.Agent, batch string, ids ...string) []task.Completion {
	t.Helper()
	b := &task.Batch{ID: batch}
	for _, id := range ids {
		b.Tasks = append(b.Tasks, chatTask(id))
	}
	var c collected
	if err := a.RunBatch(context.Background(), b, c.emit); err != nil {
		t.Fatal(err)
	}
	var out []task.Completion
	for i := range ids {
		evs := c.events[i]
		done := evs[len(evs)-1]
		if done.Completion == nil {
			t.Fatalf("task %s: no completion record: %+v", ids[i], done)
		}
		out = append(out, *done.Completion)
	}
	return out
}

func countersignRequest(seq uint64, cs ...task.Completion) *workers.CountersignRequest {
	return &workers.CountersignRequest{Sequence: seq, Capacity: 8, Model: cs[0].Model, ModelDigest: cs[0].ModelDigest, Time: t0, Completions: cs}
}

func testKey(t *testing.T, seed byte) *keys.Key {
	t.Helper()
	k, err := keys.Generate(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func refusedCodes(t *testing.T, err error) map[string]string {
	t.Helper()
	var re *workers.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a countersign refusal", err)
	}
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "countersign_refused" {
		t.Fatalf("err = %v, want 403 countersign_refused", err)
	}
	out := map[string]string{}
	for _, r := range re.Records {
		out[r.RequestID] = r.Code
	}
	return out
}

// TestRecordsAndSignaturesSurviveRestart: what a worker produced and what
// it countersigned are on disk before it answers, so a worker killed and
// restarted still signs its own records and still never signs one into a
// second batch.
func TestRecordsAndSignaturesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t, 7)
	cfg := workers.AgentConfig{WorkerID: key.WorkerID(), Engine: simEngine(t), Clock: clock.NewFake(t0), DataDir: dir}
	a, err := workers.OpenAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs := produce(t, a, "b1", "r0", "r1", "r2")
	first, err := workers.NewCountersigner(key, a, nil).Countersign(context.Background(), countersignRequest(1, cs[0], cs[1]))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	again, err := workers.OpenAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, c := range cs {
		if got, ok := again.Produced(c.RequestID); !ok || *got != c {
			t.Errorf("%s after restart: %+v, %v", c.RequestID, got, ok)
		}
	}
	signer := workers.NewCountersigner(key, again, nil)
	// The prover lost the answer and asks again: the same signature.
	rep, err := signer.Countersign(context.Background(), countersignRequest(1, cs[0], cs[1]))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Signature != first.Signature || !rep.Repeated {
		t.Errorf("repeated batch: signature %q repeated %v, want the first one %q", rep.Signature, rep.Repeated, first.Signature)
	}
	// A second batch holding a signed leaf: refused for that leaf only.
	_, err = signer.Countersign(context.Background(), countersignRequest(2, cs[1], cs[2]))
	if diff := refusedCodes(t, err); len(diff) != 1 || diff["r1"] != workers.RefuseAlreadyCountersigned {
		t.Errorf("refused %v, want r1 already_countersigned", diff)
	}
	if _, err := signer.Countersign(context.Background(), countersignRequest(2, cs[2])); err != nil {
		t.Errorf("the unsigned record alone: %v", err)
	}
}

// TestRecordsAgeOutAndSaySo: records are kept by age, not by count; one
// that ages out is logged and then refused as expired (a permanent,
// explicit reason), not as unknown.
func TestRecordsAgeOutAndSaySo(t *testing.T) {
	clk := clock.NewFake(t0)
	var logs syncBuffer
	key := testKey(t, 8)
	a, err := workers.OpenAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: simEngine(t), Clock: clk,
		DataDir: t.TempDir(), RecordMaxAge: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	old := produce(t, a, "b1", "old-0", "old-1")
	signer := workers.NewCountersigner(key, a, nil, workers.WithCountersignClock(clk))
	if _, err := signer.Countersign(context.Background(), countersignRequest(1, old[0])); err != nil {
		t.Fatal(err)
	}
	clk.Advance(59 * time.Minute)
	if _, ok := a.Produced("old-1"); !ok {
		t.Fatal("a record younger than the max age is gone")
	}
	clk.Advance(2 * time.Minute)
	if _, ok := a.Produced("old-1"); ok {
		t.Fatal("a record older than the max age is still served")
	}
	produce(t, a, "b2", "new-0") // the next apply sweeps
	if err := workers.FlushRecords(a); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "completion records aged out") || !strings.Contains(logs.String(), "never_countersigned=1") {
		t.Errorf("no age-out log naming the unsigned record:\n%s", logs.String())
	}
	_, err = signer.Countersign(context.Background(), countersignRequest(2, old[1]))
	if got := refusedCodes(t, err); got["old-1"] != workers.RefuseRecordExpired {
		t.Errorf("refused %v, want old-1 record_expired", got)
	}
}

// TestRecordStoreBoundedBySize: past its byte budget the store ages out
// its oldest records (and says so), however young.
func TestRecordStoreBoundedBySize(t *testing.T) {
	clk := clock.NewFake(t0)
	var logs syncBuffer
	key := testKey(t, 9)
	a, err := workers.OpenAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: simEngine(t), Clock: clk,
		DataDir: t.TempDir(), RecordMaxBytes: 8 << 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var all []task.Completion
	for i := range 40 {
		clk.Advance(time.Second)
		all = append(all, produce(t, a, fmt.Sprint("b", i), fmt.Sprint("r", i))...)
	}
	if err := workers.FlushRecords(a); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, c := range all {
		if _, ok := a.Produced(c.RequestID); ok {
			kept++
		}
	}
	if kept == 0 || kept == len(all) {
		t.Fatalf("kept %d of %d records within 8 KiB", kept, len(all))
	}
	if _, ok := a.Produced(all[len(all)-1].RequestID); !ok {
		t.Error("the newest record was dropped")
	}
	if !strings.Contains(logs.String(), "record store is full") {
		t.Errorf("no log saying the store is full:\n%s", logs.String())
	}
	_, err = workers.NewCountersigner(key, a, nil).Countersign(context.Background(), countersignRequest(1, all[0]))
	if got := refusedCodes(t, err); got[all[0].RequestID] != workers.RefuseRecordExpired {
		t.Errorf("refused %v, want record_expired", got)
	}
}

// TestLegacyRecordFileImported: an older worker's completions.jsonl is
// taken into the store once.
func TestLegacyRecordFileImported(t *testing.T) {
	dir := t.TempDir()
	c := task.Completion{RequestID: "legacy-1", WorkerID: "w", Model: "m", Time: t0}
	line, _ := json.Marshal(c)
	if err := os.WriteFile(filepath.Join(dir, "completions.jsonl"), append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := workers.OpenAgent(workers.AgentConfig{WorkerID: "w", Engine: simEngine(t), Clock: clock.NewFake(t0.Add(time.Minute)), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got, ok := a.Produced("legacy-1"); !ok || got.RequestID != "legacy-1" {
		t.Errorf("legacy record: %+v %v", got, ok)
	}
	if _, err := os.Stat(filepath.Join(dir, "completions.jsonl")); !os.IsNotExist(err) {
		t.Errorf("legacy file still there: %v", err)
	}
}

// TestRecordStoreIsSingleProcess: a second worker on the same data
// directory does not start with a store of its own (it would sign what
// the first already signed).
func TestRecordStoreIsSingleProcess(t *testing.T) {
	dir := t.TempDir()
	cfg := workers.AgentConfig{WorkerID: "w", Engine: simEngine(t), DataDir: dir}
	a, err := workers.OpenAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if b, err := workers.OpenAgent(cfg); err == nil {
		b.Close()
		t.Fatal("a second agent opened the same record store")
	}
}

// TestAgedOutAndRefusedRecordsAreCounted: the worker's metrics say how
// many records aged out unsigned and how many countersigns it refused, by
// reason.
func TestAgedOutAndRefusedRecordsAreCounted(t *testing.T) {
	prov, shutdown, err := obs.Setup(context.Background(), obs.Config{ServiceName: "test", Prometheus: true})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // in-memory
	clk := clock.NewFake(t0)
	key := testKey(t, 10)
	a, err := workers.OpenAgent(workers.AgentConfig{WorkerID: key.WorkerID(), Engine: simEngine(t), Clock: clk,
		DataDir: t.TempDir(), RecordMaxAge: time.Hour, Obs: prov})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	old := produce(t, a, "b1", "old-0")
	clk.Advance(2 * time.Hour)
	produce(t, a, "b2", "new-0")
	if err := workers.FlushRecords(a); err != nil {
		t.Fatal(err)
	}
	signer := workers.NewCountersigner(key, a, nil, workers.WithCountersignMetrics(prov.Metrics()))
	if _, err := signer.Countersign(context.Background(), countersignRequest(1, old[0])); err == nil {
		t.Fatal("an aged-out record was countersigned")
	}
	var buf bytes.Buffer
	if err := prov.WriteMetrics(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`tollgate_worker_records_total{event="aged_out_unsigned"`, `tollgate_worker_records_total{event="refused_record_expired"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(buf.String(), "tollgate_worker"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
