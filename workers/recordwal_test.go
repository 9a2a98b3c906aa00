package workers

import (
	"bufio"
	"bytes"
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

var walT0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func walRecord(id string) *task.Completion {
	return &task.Completion{RequestID: id, WorkerID: "0x1234", Model: "m", ModelDigest: digestHex, RequestDigest: digestHex,
		ResponseDigest: digestHex, Subject: "key_1", PromptTokens: 12, CompletionTokens: 34, Time: walT0}
}

// recordFrames encodes records as the store logs them, one frame each,
// numbered from seq 1, each its own commit group.
func recordFrames(t *testing.T, ids ...string) (log []byte, ends []int) {
	t.Helper()
	for i, id := range ids {
		v, err := recordValue(walT0.UnixNano(), walRecord(id))
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		log = wal.AppendFrame(log, wal.Frame{Seq: seq, Count: 1, Group: seq, Payload: v})
		ends = append(ends, len(log))
	}
	return log, ends
}

// inBolt reports whether bbolt itself (not the unapplied index) holds id.
func inBolt(t *testing.T, s *recordStore, id string) bool {
	t.Helper()
	var found bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketProduced).Get([]byte(id)) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// TestRecordGetBeforeApply: an add is acknowledged once its frame is
// synced, before bbolt holds it; get (what a countersign checks) sees it
// from the unapplied index, and close applies it.
func TestRecordGetBeforeApply(t *testing.T) {
	dir := t.TempDir()
	s, err := openRecordStore(recordOptions{dir: dir, applyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.add(walRecord("r1")); err != nil {
		t.Fatal(err)
	}
	if inBolt(t, s, "r1") {
		t.Fatal("applied within the apply delay: the test shows nothing")
	}
	if got, ok := s.get("r1"); !ok || *got != *walRecord("r1") {
		t.Errorf("get before apply: %+v, %v", got, ok)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, recordsLog)); err != nil || fi.Size() != 0 {
		t.Errorf("log after close: %v; want empty", err)
	}
	s, err = openRecordStore(recordOptions{dir: dir, applyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if !inBolt(t, s, "r1") {
		t.Error("close did not apply the record")
	}
}

// TestRecordWALReplayTornTail: a crash during the last group's write
// leaves a torn final frame; opening drops it (never acknowledged), keeps
// every intact one, empties the log and goes on numbering from there. A
// damaged frame with a later group's intact frame after it fails the open
// and leaves the log as it was.
func TestRecordWALReplayTornTail(t *testing.T) {
	ids := []string{"r0", "r1", "r2", "r3"}
	log, ends := recordFrames(t, ids...)
	zeroedLast := bytes.Clone(log)
	clear(zeroedLast[ends[2]+wal.HeaderSize:])
	damaged := bytes.Clone(log)
	damaged[ends[0]+wal.HeaderSize+10] ^= 1
	tests := []struct {
		name    string
		log     []byte
		want    int // records that survive
		corrupt bool
	}{
		{"whole log", log, 4, false},
		{"cut in the last header", log[:ends[2]+3], 3, false},
		{"cut in the last payload", log[:len(log)-5], 3, false},
		{"last payload zeroed", zeroedLast, 3, false},
		{"zeros after the last frame", append(bytes.Clone(log), make([]byte, 4096)...), 4, false},
		{"only a torn frame", log[:5], 0, false},
		{"damaged second frame", damaged, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, recordsLog)
			if err := os.WriteFile(path, tc.log, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := openRecordStore(recordOptions{dir: dir, clock: clock.NewFake(walT0)})
			if tc.corrupt {
				if !errors.Is(err, wal.ErrCorrupt) {
					t.Fatalf("open: err = %v, want ErrCorrupt", err)
				}
				if got, _ := os.ReadFile(path); !bytes.Equal(got, tc.log) {
					t.Error("a refused open changed the log")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			// Replayed and emptied, then preallocated: zeros only.
			if data, err := os.ReadFile(path); err != nil || len(bytes.Trim(data, "\x00")) != 0 {
				t.Errorf("log after replay: %v; want no frames left", err)
			}
			for i, id := range ids {
				if _, ok := s.get(id); ok != (i < tc.want) {
					t.Errorf("%s: held %v, want %v", id, ok, i < tc.want)
				}
			}
			if err := s.add(walRecord("next")); err != nil {
				t.Fatal(err)
			}
			if err := s.flush(); err != nil {
				t.Fatal(err)
			}
			if got := appliedMark(t, s); got != uint64(tc.want+1) {
				t.Errorf("applied mark %d after the next add, want %d", got, tc.want+1)
			}
		})
	}
}

func appliedMark(t *testing.T, s *recordStore) uint64 {
	t.Helper()
	var mark uint64
	if err := s.db.View(func(tx *bolt.Tx) error { mark = getU64(tx.Bucket(bucketRecMeta), metaApplied); return nil }); err != nil {
		t.Fatal(err)
	}
	return mark
}

// TestRecordWALKilledMidLoad is the crash attack on the worker's record
// store: a child process adds records from 16 goroutines and prints each
// acknowledged one; it is killed (SIGKILL) mid-load, the store reopened
// and checked, three times over. Every acknowledged record must be there,
// and exactly once: one age-index entry per record, and the live-bytes
// count (what the size bound ages out by) equal to what the records take.
func TestRecordWALKilledMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	var acked []string
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRecordWALCrashChild$")
		cmd.Env = append(os.Environ(), "RECORD_WAL_CHILD="+dir, "RECORD_WAL_ROUND="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt, n := 400+300*round, 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 || f[0] != "ack" {
				continue
			}
			acked = append(acked, f[1])
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
		for _, id := range acked {
			if _, ok := s.get(id); !ok {
				t.Errorf("round %d: acknowledged record %s lost", round, id)
			}
		}
		records, ageEntries, bytes, counted := storeCensus(t, s)
		if ageEntries != records || bytes != counted {
			t.Errorf("round %d: %d records, %d age entries, %d bytes counted for %d: a record applied twice", round, records, ageEntries, counted, bytes)
		}
		s.close()
		t.Logf("round %d: %d acknowledged in all, %d stored", round, len(acked), records)
	}
}

// storeCensus counts bbolt's records and age entries, and the live bytes
// the records take against those the meta bucket counts.
func storeCensus(t *testing.T, s *recordStore) (records, ageEntries int, bytes, counted int64) {
	t.Helper()
	if err := s.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bucketAge)
		err := tx.Bucket(bucketProduced).ForEach(func(k, v []byte) error {
			records++
			if ab.Get(ageKey(int64(binary.BigEndian.Uint64(v)), k)) == nil {
				return fmt.Errorf("record %s has no age entry", k)
			}
			bytes += int64(len(v)+2*len(k)) + 8
			return nil
		})
		ageEntries = ab.Stats().KeyN
		counted = int64(getU64(tx.Bucket(bucketRecMeta), metaBytes))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return records, ageEntries, bytes, counted
}

// TestRecordWALCrashChild is TestRecordWALKilledMidLoad's child: it adds
// records until it is killed (or a minute passes), printing "ack <id>"
// for each acknowledged add. A small log and a short apply delay make
// rewinds and applies happen under load too.
func TestRecordWALCrashChild(t *testing.T) {
	dir := os.Getenv("RECORD_WAL_CHILD")
	if dir == "" {
		t.Skip("run by TestRecordWALKilledMidLoad")
	}
	round := os.Getenv("RECORD_WAL_ROUND")
	s, err := openRecordStore(recordOptions{dir: dir, maxLogBytes: 32 << 10, applyDelay: 5 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	stdout := bufio.NewWriter(os.Stdout)
	deadline := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				c := walRecord(fmt.Sprintf("req-r%s-w%d-%d", round, w, i))
				if err := s.add(c); err != nil {
					fmt.Fprintln(os.Stderr, "child add:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(stdout, "ack %s\n", c.RequestID)
				stdout.Flush() // before the next add can be acknowledged
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.close()
}

// TestRecordRefusedBeforeTheLog: a record bbolt could not take (no
// request ID) is refused at add, not acknowledged and then fatal to the
// applier; the store goes on.
func TestRecordRefusedBeforeTheLog(t *testing.T) {
	s, err := openRecordStore(recordOptions{dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.add(walRecord("")); err == nil {
		t.Fatal("a record without a request ID was acknowledged")
	}
	if err := s.add(walRecord("r1")); err != nil {
		t.Fatal(err)
	}
	if err := s.flush(); err != nil {
		t.Fatalf("flush after a refused add: %v", err)
	}
}
