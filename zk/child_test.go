package zk

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/tollgate-ai/tollgate/receipts"
)

// childModeEnv makes this test binary a proving child (see TestMain):
// "serve" is the honest child; the others play a broken or dishonest one.
const childModeEnv = "TOLLGATE_ZK_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(childModeEnv); ok {
		os.Exit(runTestChild(mode))
	}
	os.Exit(m.Run())
}

func runTestChild(mode string) int {
	switch {
	case mode == "serve" || strings.HasPrefix(mode, "serve:"):
		dir := TestKeyDir()
		if d, ok := strings.CutPrefix(mode, "serve:"); ok {
			dir = d
		}
		if err := ServeProofs(os.Stdin, os.Stdout, dir, slog.New(slog.DiscardHandler)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case strings.HasPrefix(mode, "replay:"):
		// A dishonest child: a valid proof, but of another batch.
		proof, err := os.ReadFile(strings.TrimPrefix(mode, "replay:"))
		if err != nil {
			return 1
		}
		for {
			if _, err := readFrame(os.Stdin, maxWitnessFrame); err != nil {
				return 0
			}
			writeFrame(os.Stdout, []byte{0}, proof)
		}
	case mode == "die":
		readFrame(os.Stdin, maxWitnessFrame)
		return 3 // exits mid-exchange
	case mode == "huge":
		readFrame(os.Stdin, maxWitnessFrame)
		os.Stdout.Write([]byte{0xff, 0xff, 0xff, 0xff})
		io.Copy(io.Discard, os.Stdin)
		return 0
	case mode == "pad" || mode == "raw" || mode == "count":
		// A genuine proof of the batch asked for, in another encoding:
		// with bytes after it, or uncompressed.
		provers := map[int]*Prover{}
		for {
			req, err := readFrame(os.Stdin, maxWitnessFrame)
			if err != nil {
				return 0
			}
			proof, err := serveOne(req, TestKeyDir(), provers)
			if err != nil {
				return 1
			}
			switch mode {
			case "count":
				// Ar, Bs, Krs (compressed), then a count of 2^32-1
				// commitments that the reply cannot hold.
				proof = append(proof[:128:128], 0xff, 0xff, 0xff, 0xff)
			case "pad":
				proof = append(proof, bytes.Repeat([]byte("x"), 64<<10)...)
			default:
				pr := groth16.NewProof(ecc.BN254)
				if _, err := pr.ReadFrom(bytes.NewReader(proof)); err != nil {
					return 1
				}
				var buf bytes.Buffer
				pr.WriteRawTo(&buf)
				proof = buf.Bytes()
			}
			writeFrame(os.Stdout, []byte{0}, proof)
		}
	case mode == "hang":
		readFrame(os.Stdin, maxWitnessFrame)
		time.Sleep(time.Hour) // never answers
	case mode == "refuse":
		for {
			if _, err := readFrame(os.Stdin, maxWitnessFrame); err != nil {
				return 0
			}
			writeFrame(os.Stdout, []byte{1}, []byte("no keys here"))
		}
	}
	return 2
}

// testChild returns a Child running this test binary in mode, and a count
// of the children it started.
func testChild(t *testing.T, mode string) (*Child, *atomic.Int32) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var starts atomic.Int32
	c := NewChild(func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childModeEnv+"="+mode)
		cmd.Stderr = os.Stderr
		return cmd
	}, func(cmd *exec.Cmd) (func() error, error) {
		starts.Add(1)
		return cmd.Wait, cmd.Start()
	}, nil)
	t.Cleanup(func() { c.Close() })
	return c, &starts
}

func childProver(t *testing.T, c *Child) *Prover {
	t.Helper()
	dir := TestKeyDir()
	if err := EnsureDevKeys(dir, 8); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProverWith(dir, 8, c)
	if err != nil {
		t.Fatal(err)
	}
	if p.pk != nil {
		t.Fatal("a prover with a child loaded the proving key too")
	}
	return p
}

func TestChildProves(t *testing.T) {
	c, starts := testChild(t, "serve")
	p := childProver(t, c)
	for n := 1; n <= 3; n++ {
		b, _ := testBatch(t, 8, n)
		proof, pub, err := p.Prove(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := receipts.VerifyProof(p.VK, &pub, proof); err != nil {
			t.Fatalf("proof from the child does not verify: %v", err)
		}
	}
	if got := starts.Load(); got != 1 {
		t.Errorf("%d children started for three proofs, want 1", got)
	}
}

// A child returning a genuine proof of some other batch must not get it
// accepted for this one.
func TestChildProofOfAnotherBatchRefused(t *testing.T) {
	local, err := LoadProver(TestKeyDir(), 8)
	if err != nil {
		if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
			t.Fatal(err)
		}
		if local, err = LoadProver(TestKeyDir(), 8); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := testBatch(t, 8, 2)
	enc, _, err := local.Prove(other)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(enc)
	file := t.TempDir() + "/proof"
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := testChild(t, "replay:"+file)
	p := childProver(t, c)
	b, _ := testBatch(t, 8, 3) // another statement: three leaves
	if _, _, err := p.Prove(b); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("proof of another batch accepted, or refused for the wrong reason: %v", err)
	}
}

func TestChildFailures(t *testing.T) {
	for _, tt := range []struct {
		mode, want string
		restarts   bool // the next proof starts a fresh child
	}{
		{"die", "read proof", true},
		{"huge", "exceeds", true},
		{"refuse", "no keys here", false},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			c, starts := testChild(t, tt.mode)
			p := childProver(t, c)
			b, _ := testBatch(t, 8, 1)
			for i := range 2 {
				_, _, err := p.Prove(b)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("proof %d: err %v, want one naming %q", i, err, tt.want)
				}
			}
			want := int32(1)
			if tt.restarts {
				want = 2
			}
			if got := starts.Load(); got != want {
				t.Errorf("%d children started, want %d", got, want)
			}
		})
	}
}

func TestChildClosed(t *testing.T) {
	c, starts := testChild(t, "serve")
	p := childProver(t, c)
	c.Close()
	b, _ := testBatch(t, 8, 1)
	if _, _, err := p.Prove(b); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("proof after Close: %v", err)
	}
	if starts.Load() != 0 {
		t.Error("a child was started after Close")
	}
}

func TestServeProofsBadRequests(t *testing.T) {
	if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	local, err := LoadProver(TestKeyDir(), 8)
	if err != nil {
		t.Fatal(err)
	}
	vkDigest := sha256.Sum256(local.VKFile)
	for _, tt := range []struct {
		name string
		req  []byte
		want string
	}{
		{"short", []byte{0, 0}, "shorter"},
		{"no digest", []byte{0, 0, 0, 8, 1, 2, 3}, "shorter"},
		{"capacity", append([]byte{0, 0, 0, 9}, make([]byte, 34)...), "not one of"},
		{"other key", append([]byte{0, 0, 0, 8}, make([]byte, 34)...), "replaced while it runs"},
		{"witness", append(append([]byte{0, 0, 0, 8}, vkDigest[:]...), 1, 2, 3), "witness"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var in, out bytes.Buffer
			writeFrame(&in, tt.req)
			if err := ServeProofs(&in, &out, TestKeyDir(), slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			reply, err := readFrame(&out, maxReplyFrame)
			if err != nil {
				t.Fatal(err)
			}
			if reply[0] != 1 || !strings.Contains(string(reply[1:]), tt.want) {
				t.Fatalf("reply %q, want an error naming %q", reply, tt.want)
			}
		})
	}
	// A frame over the bound ends the child with an error.
	var in bytes.Buffer
	in.Write([]byte{0x7f, 0xff, 0xff, 0xff})
	if err := ServeProofs(&in, io.Discard, TestKeyDir(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("an oversized frame was read")
	}
}

// hangChild starts this test binary in mode "hang" (it reads a request and
// never replies) with start, and kills it at the end of the test even if
// Close never returns.
func hangChild(t *testing.T, start func(*exec.Cmd) (func() error, error)) *Child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := NewChild(func() *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childModeEnv+"=hang")
		cmd.Stderr = os.Stderr
		return cmd
	}, start, nil)
	t.Cleanup(func() {
		if p := c.proc.Load(); p != nil {
			p.Kill()
		}
	})
	return c
}

// Close while the child is being started must still stop the proof that
// start is for: otherwise Close (the gateway's stop) waits for a whole
// proof, forever if the child never answers.
func TestChildCloseWhileStarting(t *testing.T) {
	starting, release := make(chan struct{}), make(chan struct{})
	c := hangChild(t, func(cmd *exec.Cmd) (func() error, error) {
		close(starting)
		<-release
		return cmd.Wait, cmd.Start()
	})
	p := childProver(t, c)
	b, _ := testBatch(t, 8, 1)
	proved := make(chan error, 1)
	go func() { _, _, err := p.Prove(b); proved <- err }()
	<-starting
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	for !c.closed.Load() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	select {
	case err := <-proved:
		if err == nil {
			t.Fatal("a proof succeeded after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close during the child's start did not stop the proof")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

// A child that never answers is killed after the proof's deadline; the
// next proof starts a fresh one.
func TestChildDeadline(t *testing.T) {
	var starts atomic.Int32
	c := hangChild(t, func(cmd *exec.Cmd) (func() error, error) {
		starts.Add(1)
		return cmd.Wait, cmd.Start()
	})
	c.timeout = func(capacity int) time.Duration {
		if capacity != 8 {
			t.Errorf("deadline asked for capacity %d", capacity)
		}
		return 200 * time.Millisecond
	}
	p := childProver(t, c)
	b, _ := testBatch(t, 8, 1)
	for i := range 2 {
		proved := make(chan error, 1)
		go func() { _, _, err := p.Prove(b); proved <- err }()
		select {
		case err := <-proved:
			if err == nil || !strings.Contains(err.Error(), "no proof within") {
				t.Fatalf("proof %d: err %v, want the deadline's", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("proof %d: a child that never answers holds the prover", i)
		}
	}
	if got := starts.Load(); got != 2 {
		t.Errorf("%d children started, want 2", got)
	}
}

func TestChildProofDeadlineScales(t *testing.T) {
	prev := time.Duration(0)
	for _, c := range Capacities {
		d := proofDeadline(c)
		if d <= prev || d < 10*time.Minute {
			t.Errorf("capacity %d: deadline %s (previous %s): want generous and growing", c, d, prev)
		}
		prev = d
	}
}

// A proof from the child is kept only in its one canonical encoding
// (gnark's compressed WriteTo), whatever bytes the child sent: a child
// must not get bytes of its own choosing into the ledger and every
// receipt served (64 KiB of padding here, up to the 1 MiB reply bound).
func TestChildProofEncoding(t *testing.T) {
	for _, tt := range []struct{ mode, wantErr string }{
		{"pad", "bytes after the proof"},
		{"raw", ""}, // uncompressed: accepted, stored compressed
		// A length the decoder would allocate 4 G points for (256 GiB):
		// refused before it is read.
		{"count", "commitments"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			c, _ := testChild(t, tt.mode)
			p := childProver(t, c)
			b, _ := testBatch(t, 8, 2)
			enc, pub, err := p.Prove(b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one naming %q (proof of %d base64 bytes)", err, tt.wantErr, len(enc))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := receipts.VerifyProof(p.VK, &pub, enc); err != nil {
				t.Fatal(err)
			}
			raw, _ := base64.StdEncoding.DecodeString(enc)
			pr := groth16.NewProof(ecc.BN254)
			if _, err := pr.ReadFrom(bytes.NewReader(raw)); err != nil {
				t.Fatal(err)
			}
			var canon bytes.Buffer
			pr.WriteTo(&canon)
			if !bytes.Equal(raw, canon.Bytes()) {
				t.Fatalf("stored proof is the child's %d bytes, not the canonical %d", len(raw), canon.Len())
			}
		})
	}
}

// Close killing a proof in flight (the gateway stopping) is no failure to
// warn about: nothing starts another child.
func TestChildCloseMidProofQuiet(t *testing.T) {
	var log bytes.Buffer
	c := hangChild(t, nil)
	c.logger = slog.New(slog.NewTextHandler(&log, nil))
	p := childProver(t, c)
	b, _ := testBatch(t, 8, 1)
	proved := make(chan error, 1)
	go func() { _, _, err := p.Prove(b); proved <- err }()
	for c.proc.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	if err := <-proved; err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("proof killed by Close: err %v, want one saying the child was closed", err)
	}
	if strings.Contains(log.String(), "level=WARN") {
		t.Fatalf("Close logged a warning:\n%s", log.String())
	}
}

// copyKeys copies the capacity's key pair from src into dst.
func copyKeys(t *testing.T, src, dst string, capacity int) {
	t.Helper()
	sp, sv := KeyFiles(src, capacity)
	dp, dv := KeyFiles(dst, capacity)
	for _, f := range [][2]string{{sp, dp}, {sv, dv}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// An operator replaces the key pair on disk while the gateway runs (it
// loaded its verifying key at start), and the proving child restarts. The
// child must not prove with a proving key from another set-up — every such
// proof fails the parent's check, each after a whole batch's proving — but
// say at once that the keys were replaced. Before, every batch failed "does
// not verify" until a restart.
func TestChildRefusesKeysReplacedOnDisk(t *testing.T) {
	if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyKeys(t, TestKeyDir(), dir, 8)
	c, starts := testChild(t, "serve:"+dir)
	p, err := LoadProverWith(dir, 8, c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testBatch(t, 8, 1)
	if _, _, err := p.Prove(b); err != nil {
		t.Fatal(err)
	}

	// Another set-up's pair replaces the files; the running child keeps
	// the pair it loaded, which is the parent's, and goes on proving.
	other := t.TempDir()
	if err := EnsureDevKeys(other, 8); err != nil {
		t.Fatal(err)
	}
	copyKeys(t, other, dir, 8)
	if _, _, err := p.Prove(b); err != nil {
		t.Fatalf("the running child stopped proving with the parent's keys: %v", err)
	}

	// The child restarts (killed here): it now finds the new pair.
	c.mu.Lock()
	c.stopLocked(true)
	c.mu.Unlock()
	start := time.Now()
	_, _, err = p.Prove(b)
	if err == nil || !strings.Contains(err.Error(), "replaced while it runs") {
		t.Fatalf("proof with replaced keys on disk: %v, want an error saying they were replaced", err)
	}
	if starts.Load() != 2 {
		t.Errorf("%d children started, want 2", starts.Load())
	}
	t.Logf("refused in %s: %v", time.Since(start), err)
}

// A proving key and a verifying key of different set-ups (one of the two
// files replaced) are refused when loaded, not after a batch's proving.
func TestLoadProverRefusesMixedPair(t *testing.T) {
	if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := EnsureDevKeys(other, 8); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyKeys(t, TestKeyDir(), dir, 8)
	if _, err := LoadProver(dir, 8); err != nil {
		t.Fatalf("a matching pair: %v", err)
	}
	_, ov := KeyFiles(other, 8)
	_, dv := KeyFiles(dir, 8)
	vk, err := os.ReadFile(ov)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dv, vk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProver(dir, 8); !errors.Is(err, errKeyPair) {
		t.Fatalf("proving key of one set-up, verifying key of another: %v, want errKeyPair", err)
	}
}

// A pair replaced on disk is refused from its verifying key alone: the
// child answers each request until the restart without reading the proving
// key (165 MiB at the largest capacity, seconds of the child's CPU and
// that much memory each time). Here the proving key on disk is not one,
// so a child that reads it answers a read error instead. Before, the whole
// pair was loaded, and only then its verifying key compared.
func TestServeProofsRefusesReplacedKeysUnread(t *testing.T) {
	if err := EnsureDevKeys(TestKeyDir(), 8); err != nil {
		t.Fatal(err)
	}
	_, srcVK := KeyFiles(TestKeyDir(), 8)
	b, err := os.ReadFile(srcVK)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(b) // the parent's verifying key file
	vk, err := receipts.ParseVerifyingKey(b)
	if err != nil {
		t.Fatal(err)
	}
	// Another file on disk (here the same key under another header: any
	// other file is another digest), and no proving key.
	dir := t.TempDir()
	pkPath, vkPath := KeyFiles(dir, 8)
	var other bytes.Buffer
	if err := WriteVerifyingKey(&other, 8, CeremonyDev, 1, vk.Key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vkPath, other.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pkPath, []byte("not a proving key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	provers := map[int]*Prover{}
	req := append(append([]byte{0, 0, 0, 8}, want[:]...), 1, 2, 3)
	for i := range 2 { // and again: nothing was cached
		if _, err := serveOne(req, dir, provers); err == nil || !strings.Contains(err.Error(), "replaced while it runs") {
			t.Fatalf("request %d with the keys replaced on disk: %v, want an error saying they were replaced", i+1, err)
		}
	}
	if len(provers) != 0 {
		t.Fatalf("a replaced pair was cached: %v", provers)
	}
}
