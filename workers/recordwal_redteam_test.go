package workers

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/internal/wal"
)

// crashCopy copies a live store's files into a new directory: what a
// kill -9 at this moment leaves on disk (the page cache outlives the
// process). bbolt is copied in a read transaction, a consistent snapshot
// even while the applier commits; then the log, which only an add
// changes (callers add nothing meanwhile), so it still holds every frame
// past the snapshot's applied mark.
func crashCopy(t *testing.T, s *recordStore, dir string) string {
	t.Helper()
	to := t.TempDir()
	if err := s.db.View(func(tx *bolt.Tx) error {
		f, err := os.OpenFile(filepath.Join(to, recordsFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = tx.WriteTo(f)
		return errors.Join(err, f.Close())
	}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, recordsLog))
	if errors.Is(err, os.ErrNotExist) {
		return to
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(to, recordsLog), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return to
}

// versioned is walRecord with a marker of which attempt produced it.
func versioned(id string, attempt int) *task.Completion {
	c := walRecord(id)
	c.CompletionTokens = attempt
	return c
}

// checkRecovered opens dir and checks that it holds exactly want (request
// ID → the attempt of its newest acknowledged record), each once: one
// age entry per record, the live-bytes count equal to what they take, the
// applied mark at the last acknowledged seq. It returns the store, open.
func checkRecovered(t *testing.T, dir string, o recordOptions, want map[string]int, lastSeq uint64) *recordStore {
	t.Helper()
	o.dir = dir
	s, err := openRecordStore(o)
	if err != nil {
		t.Fatalf("reopen after the crash: %v", err)
	}
	t.Cleanup(func() { s.close() })
	for id, attempt := range want {
		got, ok := s.get(id)
		if !ok {
			t.Errorf("acknowledged record %s lost", id)
			continue
		}
		if got.CompletionTokens != attempt {
			t.Errorf("record %s: attempt %d, want the newest, %d", id, got.CompletionTokens, attempt)
		}
	}
	records, ageEntries, bytes, counted := storeCensus(t, s)
	if records != len(want) || ageEntries != records || bytes != counted {
		t.Errorf("%d records (want %d), %d age entries, %d bytes counted for %d", records, len(want), ageEntries, counted, bytes)
	}
	if got := appliedMark(t, s); got != lastSeq {
		t.Errorf("applied mark %d after replay, want %d", got, lastSeq)
	}
	return s
}

// TestRedteamRecordCrashPoints kills the store (see crashCopy) at chosen
// points: every record acknowledged, none applied; all applied, the log
// not yet rewound; after rewinds, new frames over stale ones; retried
// request IDs across all of these. The reopened store must hold every
// acknowledged record exactly once, the newest of each request ID, and
// a second crash right after the replay must change nothing.
func TestRedteamRecordCrashPoints(t *testing.T) {
	type step struct {
		id      string
		attempt int
		flush   bool // flush after it
	}
	unique := func(prefix string, n int) []step {
		var s []step
		for i := range n {
			s = append(s, step{id: fmt.Sprintf("%s-%d", prefix, i), attempt: 1})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name   string
		maxLog int64
		steps  []step
	}{
		{"acknowledged, none applied", 0, unique("a", 50)},
		{"all applied, log not rewound", 0, cat(unique("a", 50), []step{{id: "last", attempt: 1, flush: true}})},
		{"half applied", 0, cat(unique("a", 20), []step{{id: "mid", attempt: 1, flush: true}}, unique("b", 20))},
		{"retried, both unapplied", 0, []step{{id: "x", attempt: 1}, {id: "y", attempt: 1}, {id: "x", attempt: 2}}},
		{"retried, older applied", 0, []step{{id: "x", attempt: 1, flush: true}, {id: "x", attempt: 2}}},
		{"retried, newer applied, older in the log", 0, []step{{id: "x", attempt: 1}, {id: "x", attempt: 2, flush: true}}},
		// A 2 KiB log rewinds every few records: stale frames of earlier
		// passes lie behind the new ones.
		{"after rewinds", 2 << 10, unique("a", 60)},
		{"after rewinds, retried across passes", 2 << 10,
			cat([]step{{id: "x", attempt: 1}}, unique("a", 30), []step{{id: "x", attempt: 2}}, unique("b", 3), []step{{id: "x", attempt: 3}})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := recordOptions{maxLogBytes: tc.maxLog, applyDelay: time.Hour}
			o.dir = dir
			s, err := openRecordStore(o)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			want := map[string]int{}
			for _, st := range tc.steps {
				if err := s.add(versioned(st.id, st.attempt)); err != nil {
					t.Fatal(err)
				}
				want[st.id] = st.attempt
				if st.flush {
					if err := s.flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			// An add returns before the checkpoint its group may start;
			// one more add waits that out.
			if err := s.add(versioned("fence", 1)); err != nil {
				t.Fatal(err)
			}
			want["fence"] = 1
			last := uint64(len(tc.steps) + 1)
			crashed := crashCopy(t, s, dir)
			r := checkRecovered(t, crashed, recordOptions{applyDelay: time.Hour}, want, last)
			again := crashCopy(t, r, crashed)
			checkRecovered(t, again, recordOptions{applyDelay: time.Hour}, want, last)
			// The recovered store goes on numbering after the last seq.
			if err := r.add(versioned("after", 1)); err != nil {
				t.Fatal(err)
			}
			if err := r.flush(); err != nil {
				t.Fatal(err)
			}
			if got := appliedMark(t, r); got != last+1 {
				t.Errorf("applied mark %d after one more add, want %d", got, last+1)
			}
		})
	}
}

// TestRedteamRecordTornFirstFrameAfterRewind: a crash during the first
// write after a rewind tears the frame at offset 0, stale frames of the
// previous pass behind it. The open must drop the torn (unacknowledged)
// frame, take no stale frame for damage, and lose nothing acknowledged.
func TestRedteamRecordTornFirstFrameAfterRewind(t *testing.T) {
	dir := t.TempDir()
	s, err := openRecordStore(recordOptions{dir: dir, maxLogBytes: 4 << 10, applyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	want := map[string]int{}
	var seq uint64
	for i := 0; ; i++ {
		id := fmt.Sprintf("a-%d", i)
		if err := s.add(versioned(id, 1)); err != nil {
			t.Fatal(err)
		}
		seq++
		want[id] = 1
		// The frame of seq at offset 0: it was written after a rewind.
		data, err := os.ReadFile(filepath.Join(dir, recordsLog))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && len(data) > wal.HeaderSize && binary.LittleEndian.Uint64(data[8:]) == seq {
			break
		}
		if i > 1000 {
			t.Fatal("the log never rewound")
		}
	}
	if err := s.flush(); err != nil { // the record at offset 0 applied: only stale frames ≤ applied
		t.Fatal(err)
	}
	if err := s.add(versioned("torn", 1)); err != nil {
		t.Fatal(err)
	}
	crashed := crashCopy(t, s, dir)
	path := filepath.Join(crashed, recordsLog)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The torn record's frame is the second one; tear it: its payload's
	// end never reached the disk.
	first := wal.HeaderSize + int(binary.LittleEndian.Uint32(data))
	size := int(binary.LittleEndian.Uint32(data[first:]))
	clear(data[first+wal.HeaderSize+size/2 : first+wal.HeaderSize+size])
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, crashed, recordOptions{applyDelay: time.Hour}, want, seq)
}

// TestRedteamRecordReplayAgedOut: a record aged out of bbolt (its frame
// still in the log, behind the applied mark) must not come back on
// replay; one that ages out while not yet applied is not answered either,
// and leaves the byte count at zero once the sweep removes it.
func TestRedteamRecordReplayAgedOut(t *testing.T) {
	const maxAge = time.Hour
	t.Run("aged out after apply", func(t *testing.T) {
		dir := t.TempDir()
		clk := clock.NewFake(walT0)
		s, err := openRecordStore(recordOptions{dir: dir, maxAge: maxAge, clock: clk, applyDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		if err := s.add(versioned("old", 1)); err != nil {
			t.Fatal(err)
		}
		if err := s.flush(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(maxAge + time.Minute)
		if err := s.add(versioned("new", 1)); err != nil {
			t.Fatal(err)
		}
		if err := s.flush(); err != nil { // applies "new", sweeps "old"
			t.Fatal(err)
		}
		if inBolt(t, s, "old") {
			t.Fatal("the sweep kept the aged record: the test shows nothing")
		}
		crashed := crashCopy(t, s, dir)
		r := checkRecovered(t, crashed, recordOptions{maxAge: maxAge, clock: clk, applyDelay: time.Hour}, map[string]int{"new": 1}, 2)
		if inBolt(t, r, "old") {
			t.Error("replay resurrected an aged-out record")
		}
	})
	t.Run("aged out before apply", func(t *testing.T) {
		clk := clock.NewFake(walT0)
		s, err := openRecordStore(recordOptions{dir: t.TempDir(), maxAge: maxAge, clock: clk, applyDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer s.close()
		if err := s.add(versioned("r", 1)); err != nil {
			t.Fatal(err)
		}
		clk.Advance(maxAge + time.Minute)
		if _, ok := s.get("r"); ok {
			t.Error("get answered an unapplied record older than the max age")
		}
		if !s.expired(walT0) {
			t.Error("expired: false for a record older than the max age")
		}
		if err := s.flush(); err != nil {
			t.Fatal(err)
		}
		if records, _, _, counted := storeCensus(t, s); records != 0 || counted != 0 {
			t.Errorf("after the sweep: %d records, %d bytes counted; want none", records, counted)
		}
	})
}

// TestRedteamRecordReadsRaceApplier: adds from several goroutines, each
// read back (get) the moment it is acknowledged, while others read,
// countersign (SignOnce over overlapping sets) and ask expired, the
// applier applying every millisecond and the log rewinding every few
// records. Run under -race. Every acknowledged record is visible at once
// and ever after, and no request ID is signed into two batches.
func TestRedteamRecordReadsRaceApplier(t *testing.T) {
	dir := t.TempDir()
	s, err := openRecordStore(recordOptions{dir: dir, maxLogBytes: 8 << 10, applyDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter = 4, 150
	var (
		mu     sync.Mutex
		acked  []string
		signed = map[string]uint64{} // request ID → batch sequence
		wg     sync.WaitGroup
		done   = make(chan struct{})
	)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				id := fmt.Sprintf("w%d-%d", w, i%100) // the last 50 retry earlier IDs
				if err := s.add(versioned(id, i)); err != nil {
					t.Error(err)
					return
				}
				if got, ok := s.get(id); !ok || got.CompletionTokens != i {
					t.Errorf("%s: acknowledged, then get %+v, %v", id, got, ok)
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Go(func() {
			for seq := uint64(r); ; seq += 2 {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				ids := append([]string(nil), acked[max(0, len(acked)-5):]...)
				mu.Unlock()
				for _, id := range ids {
					if _, ok := s.get(id); !ok {
						t.Errorf("%s: acknowledged earlier, get misses it", id)
					}
				}
				s.expired(walT0)
				if len(ids) == 0 {
					continue
				}
				b := &SignedBatch{Sequence: seq + 1, Root: fmt.Sprintf("0x%x", seq+1), SignedAt: walT0, RequestIDs: ids}
				got, prior, err := s.SignOnce(b, func() (string, error) { return "sig", nil })
				if err != nil {
					t.Error(err)
					continue
				}
				if got != nil {
					mu.Lock()
					for _, id := range ids {
						if at, dup := signed[id]; dup {
							t.Errorf("%s signed into batches %d and %d", id, at, b.Sequence)
						}
						signed[id] = b.Sequence
					}
					mu.Unlock()
				} else if len(prior) == 0 {
					t.Error("SignOnce signed nothing and named no prior batch")
				}
				s.Signed(ids)
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	r, err := openRecordStore(recordOptions{dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for _, id := range acked {
		if _, ok := r.get(id); !ok {
			t.Errorf("%s lost across close", id)
		}
	}
	got := r.Signed(acked)
	for id, seq := range signed {
		if b := got[id]; b == nil || b.Sequence != seq {
			t.Errorf("%s: signed in batch %d, reopened store says %+v", id, seq, b)
		}
	}
}

// TestRedteamRecordApplierStalled: with bbolt's writer held (the applier
// stalled), adds are acknowledged only until the log reaches its bound,
// not without end; the unapplied index stays within what the log holds;
// releasing the writer lets everything through.
func TestRedteamRecordApplierStalled(t *testing.T) {
	const maxLog = 8 << 10
	s, err := openRecordStore(recordOptions{dir: t.TempDir(), maxLogBytes: maxLog, applyDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	v, err := recordValue(0, versioned("w-0000", 1))
	if err != nil {
		t.Fatal(err)
	}
	bound := maxLog/(wal.HeaderSize+len(v)) + 2 // one add per group: the committer stops once past maxLog
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	const total = 500
	var acks sync.WaitGroup
	ackedN := make(chan int, total)
	acks.Go(func() {
		for i := range total {
			if err := s.add(versioned(fmt.Sprintf("w-%04d", i), 1)); err != nil {
				t.Error(err)
				return
			}
			ackedN <- i + 1
		}
	})
	// Whatever the machine's speed, acknowledgements past the bound are
	// the bug; a slow machine only shows fewer of them.
	timeout := time.After(2 * time.Second)
	n := 0
wait:
	for {
		select {
		case n = <-ackedN:
			if n > bound {
				break wait
			}
		case <-timeout:
			break wait
		}
	}
	s.mu.Lock()
	indexed := len(s.unapplied)
	s.mu.Unlock()
	if n > bound || indexed > bound {
		t.Errorf("applier stalled: %d adds acknowledged, %d records indexed unapplied; the log bounds them at %d", n, indexed, bound)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	acks.Wait()
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if records, _, _, _ := storeCensus(t, s); records != total {
		t.Errorf("%d records after the applier resumed, want %d", records, total)
	}
}

// TestRedteamRecordScratchApplierStalled: without a DataDir there is no
// log to bound what waits for the applier, so with bbolt's writer held
// adds must still stop being acknowledged once applyNow records wait,
// not pile up in memory without end; releasing the writer lets them on.
func TestRedteamRecordScratchApplierStalled(t *testing.T) {
	s, err := openRecordStore(recordOptions{applyDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	tx, err := s.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	bound := applyNow + 2*cap(s.adds) // what waits, and one group more
	var (
		adders sync.WaitGroup
		mu     sync.Mutex
		n      int
		past   = make(chan struct{})
		stop   = make(chan struct{})
	)
	for w := range 16 {
		adders.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.add(versioned(fmt.Sprintf("w%d-%d", w, i), 1)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if n++; n == bound+1 {
					close(past)
				}
				mu.Unlock()
			}
		})
	}
	// Acknowledgements past the bound are the bug; a slow machine only
	// reaches it later, or not within the wait.
	select {
	case <-past:
		t.Errorf("applier stalled: more than %d adds acknowledged, all held in memory", bound)
	case <-time.After(2 * time.Second):
	}
	close(stop)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	adders.Wait()
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
}

// TestRedteamRecordKilledRetrying is the kill attack with retried
// requests and a log that rewinds every few records: a child adds new
// attempts of a small set of request IDs (each ID one goroutine's, its
// attempts rising across rounds) and prints each acknowledged one; it is
// killed mid-load, the store reopened and checked, four times over. Each
// ID must hold its last acknowledged attempt or a later one (durable,
// not yet acknowledged), never an older one; every record once.
func TestRedteamRecordKilledRetrying(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	lastAcked := map[string]int{}
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRedteamRecordRetryingChild$")
		cmd.Env = append(os.Environ(), "RECORD_RETRY_CHILD="+dir, "RECORD_RETRY_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt, n := 200+150*round, 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				continue
			}
			attempt, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatal(err)
			}
			lastAcked[f[1]] = attempt
			if n++; n == killAt {
				cmd.Process.Kill()
			}
		}
		err = cmd.Wait()
		if n < killAt {
			t.Fatalf("round %d: child ended after %d acknowledgements: %v", round, n, err)
		}
		s, err := openRecordStore(recordOptions{dir: dir})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		for id, attempt := range lastAcked {
			got, ok := s.get(id)
			switch {
			case !ok:
				t.Errorf("round %d: %s lost", round, id)
			case got.CompletionTokens < attempt:
				t.Errorf("round %d: %s holds attempt %d, older than the acknowledged %d", round, id, got.CompletionTokens, attempt)
			}
		}
		records, ageEntries, bytes, counted := storeCensus(t, s)
		if records != len(lastAcked) || ageEntries != records || bytes != counted {
			t.Errorf("round %d: %d records for %d IDs, %d age entries, %d bytes counted for %d", round, records, len(lastAcked), ageEntries, counted, bytes)
		}
		s.close()
	}
}

// TestRedteamRecordRetryingChild is TestRedteamRecordKilledRetrying's
// child: 8 goroutines, each retrying its own 5 request IDs in turn, print
// "ack <id> <attempt>" for each acknowledged add until killed.
func TestRedteamRecordRetryingChild(t *testing.T) {
	dir := os.Getenv("RECORD_RETRY_CHILD")
	if dir == "" {
		t.Skip("run by TestRedteamRecordKilledRetrying")
	}
	round, _ := strconv.Atoi(os.Getenv("RECORD_RETRY_ROUND"))
	s, err := openRecordStore(recordOptions{dir: dir, maxLogBytes: 4 << 10, applyDelay: 2 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	stdout := bufio.NewWriter(os.Stdout)
	deadline := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				attempt := round*1_000_000 + i
				c := versioned(fmt.Sprintf("req-w%d-%d", w, i%5), attempt)
				if err := s.add(c); err != nil {
					fmt.Fprintln(os.Stderr, "child add:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(stdout, "ack %s %d\n", c.RequestID, attempt)
				stdout.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.close()
}
