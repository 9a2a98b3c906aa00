package zk

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/backend/witness"
)

// A proving child is a process that proves batches for a Prover in
// another process (`tollgate dev` and `gateway` start one at the lowest
// CPU priority, so proving runs on the CPU serving leaves idle). The
// parent builds the witness and checks every proof the child returns
// against the verifying key before it is used, so a child can delay
// proofs but never get a wrong one accepted.
//
// The protocol, on the child's standard input and output, one exchange at
// a time:
//
//	request: u32 length (big-endian), then that many bytes:
//	         u32 capacity, the SHA-256 of the parent's verifying key
//	         file for that capacity (32 bytes), the witness (gnark's
//	         binary encoding)
//	reply:   u32 length, then that many bytes:
//	         u8 status (0: proof, 1: error), the proof (gnark's WriteTo
//	         encoding) or the error's text
//
// The child proves only with a proving key from the same set-up as the
// parent's verifying key: it loads the key pair from the key directory
// when it first needs a capacity, and again when the digest names another
// verifying key (the files changed since it loaded them). If the files on
// disk are not the pair the parent holds either (they were replaced while
// the parent runs, which loaded its verifying key at start), it answers
// an error saying so at once, instead of proofs that fail the parent's
// check after a whole batch's proving time each.
//
// The child exits at the end of its input (its parent closed the pipe or
// died).

// Frame bounds: a witness of the largest capacity is well under a MiB; a
// proof is a few hundred bytes.
const (
	maxWitnessFrame = 64 << 20
	maxReplyFrame   = 1 << 20
)

func writeFrame(w io.Writer, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(n))
	buf := make([]byte, 0, 4+n)
	buf = append(buf, hdr[:]...)
	for _, p := range parts {
		buf = append(buf, p...)
	}
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > uint32(limit) {
		return nil, fmt.Errorf("proving child: frame of %d bytes exceeds %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("proving child: truncated frame: %w", err)
	}
	return b, nil
}

// ServeProofs is the child's side: it proves each request with the
// capacity's keys from keyDir (loaded on first use) until r ends. An
// unusable request gets an error reply; only a broken pipe ends it early.
func ServeProofs(r io.Reader, w io.Writer, keyDir string, logger *slog.Logger) error {
	br := bufio.NewReader(r)
	provers := map[int]*Prover{}
	for {
		req, err := readFrame(br, maxWitnessFrame)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		proof, perr := serveOne(req, keyDir, provers)
		if perr != nil {
			logger.Warn("proving child: request not proven", "err", perr)
			err = writeFrame(w, []byte{1}, []byte(perr.Error()))
		} else {
			err = writeFrame(w, []byte{0}, proof)
		}
		if err != nil {
			return err
		}
	}
}

func serveOne(req []byte, keyDir string, provers map[int]*Prover) ([]byte, error) {
	if len(req) < 4+sha256.Size {
		return nil, errors.New("request shorter than its capacity and key digest")
	}
	capacity := int(binary.BigEndian.Uint32(req))
	if !slices.Contains(Capacities, capacity) {
		return nil, fmt.Errorf("capacity %d is not one of %v", capacity, Capacities)
	}
	want := [sha256.Size]byte(req[4 : 4+sha256.Size])
	replaced := func(got [sha256.Size]byte) error {
		return fmt.Errorf("the capacity-%d keys in %s are not the ones the gateway loaded (verifying key %x, the gateway's %x): they were replaced while it runs; restart it to use them", capacity, keyDir, got[:6], want[:6])
	}
	p := provers[capacity]
	if p == nil || sha256.Sum256(p.VKFile) != want {
		delete(provers, capacity)
		// The verifying key on disk first: a replaced pair is refused
		// without reading its proving key (165 MiB at the largest
		// capacity), on every request until the restart.
		_, vkPath := KeyFiles(keyDir, capacity)
		vkFile, err := os.ReadFile(vkPath)
		if err != nil {
			return nil, err
		}
		if got := sha256.Sum256(vkFile); got != want {
			return nil, replaced(got)
		}
		if p, err = LoadProver(keyDir, capacity); err != nil {
			return nil, err
		}
		if got := sha256.Sum256(p.VKFile); got != want {
			return nil, replaced(got) // replaced since the read above
		}
		provers[capacity] = p
	}
	cs, err := Compile(capacity)
	if err != nil {
		return nil, err
	}
	wit, err := witness.New(ecc.BN254.ScalarField())
	if err != nil {
		return nil, err
	}
	if err := wit.UnmarshalBinary(req[4+sha256.Size:]); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	proof, err := groth16.Prove(cs, p.pk, wit)
	if err != nil {
		return nil, fmt.Errorf("prove (capacity %d): %w", capacity, err)
	}
	var buf bytes.Buffer
	if _, err := proof.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Child is the parent's side: it starts the child process on first use
// and again after it dies, and sends it one proof at a time.
type Child struct {
	command func() *exec.Cmd
	start   func(*exec.Cmd) (wait func() error, err error)
	logger  *slog.Logger
	timeout func(capacity int) time.Duration // proofDeadline; tests shorten it

	proc   atomic.Pointer[os.Process] // the running child, for Close
	closed atomic.Bool

	mu   sync.Mutex // one exchange at a time; guards the fields below
	cmd  *exec.Cmd
	wait func() error
	in   io.WriteCloser
	out  *bufio.Reader
}

// NewChild returns a Child that runs command() (a fresh, unstarted
// command each time: the child's standard input and output are its pipes)
// with start, which starts it and returns how to wait for it (e.g.
// lowprio.Start; nil: cmd.Start and cmd.Wait).
func NewChild(command func() *exec.Cmd, start func(*exec.Cmd) (func() error, error), logger *slog.Logger) *Child {
	if start == nil {
		start = func(cmd *exec.Cmd) (func() error, error) { return cmd.Wait, cmd.Start() }
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Child{command: command, start: start, logger: logger, timeout: proofDeadline}
}

// proofDeadline is how long a child has to answer one proof before it is
// taken for stuck, killed and replaced: far beyond a proof's time on an
// idle box (6.5 s at 1,024 leaves on 2 cores), since at the lowest priority
// a busy box leaves the child little CPU; it only stops a child that will
// never answer from holding the prover for good.
func proofDeadline(capacity int) time.Duration {
	return 10*time.Minute + time.Duration(capacity)*3*time.Second
}

// prove sends one witness and returns the child's proof bytes (not yet
// checked: Prover.Prove verifies them).
func (c *Child) prove(capacity int, vkDigest [sha256.Size]byte, wit []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, errors.New("proving child: closed")
	}
	if c.cmd == nil {
		if err := c.startLocked(); err != nil {
			return nil, err
		}
	}
	// Past the deadline the child is killed: the exchange below fails.
	proc, deadline := c.cmd.Process, c.timeout(capacity)
	var late atomic.Bool
	timer := time.AfterFunc(deadline, func() {
		late.Store(true)
		proc.Kill()
	})
	defer timer.Stop()
	broken := func(what string, err error) error {
		if late.Load() {
			err = fmt.Errorf("no proof within %s (capacity %d): %w", deadline, capacity, err)
		}
		return c.brokenLocked(fmt.Errorf("%s: %w", what, err))
	}
	var capb [4]byte
	binary.BigEndian.PutUint32(capb[:], uint32(capacity))
	if err := writeFrame(c.in, capb[:], vkDigest[:], wit); err != nil {
		return nil, broken("send witness", err)
	}
	reply, err := readFrame(c.out, maxReplyFrame)
	if err != nil {
		return nil, broken("read proof", err)
	}
	if len(reply) == 0 {
		return nil, c.brokenLocked(errors.New("empty reply"))
	}
	switch reply[0] {
	case 0:
		return reply[1:], nil
	case 1:
		return nil, fmt.Errorf("proving child: %s", bytes.ToValidUTF8(reply[1:min(len(reply), 1025)], []byte("?")))
	default:
		return nil, c.brokenLocked(fmt.Errorf("reply status %d", reply[0]))
	}
}

func (c *Child) startLocked() error {
	cmd := c.command()
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		in.Close()
		return err
	}
	wait, err := c.start(cmd)
	if err != nil {
		in.Close()
		return fmt.Errorf("start the proving child: %w", err)
	}
	c.cmd, c.wait, c.in, c.out = cmd, wait, in, bufio.NewReader(out)
	c.proc.Store(cmd.Process)
	if c.closed.Load() {
		// Close ran while it started: it found no process to kill, so stop
		// this one here (Close stores closed before it loads proc).
		c.stopLocked(true)
		return errors.New("proving child: closed")
	}
	c.logger.Info("proving child started", "pid", cmd.Process.Pid)
	return nil
}

// brokenLocked kills the child after a failed exchange (the next proof
// starts a fresh one) and returns err, named.
func (c *Child) brokenLocked(err error) error {
	c.stopLocked(true)
	if c.closed.Load() {
		return fmt.Errorf("proving child: closed: %w", err) // Close killed it: no warning
	}
	err = fmt.Errorf("proving child: %w", err)
	c.logger.Warn("proving child stopped; the next proof starts another", "err", err)
	return err
}

func (c *Child) stopLocked(kill bool) {
	if c.cmd == nil {
		return
	}
	c.in.Close() // the child exits at the end of its input
	if kill {
		c.cmd.Process.Kill()
	}
	c.wait()
	c.proc.Store(nil)
	c.cmd, c.wait, c.in, c.out = nil, nil, nil, nil
}

// Close stops the child, killing it mid-proof (that proof fails); no
// child is started after Close.
func (c *Child) Close() error {
	c.closed.Store(true)
	if p := c.proc.Load(); p != nil {
		p.Kill() // a proof in flight fails at once and releases mu
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked(true)
	return nil
}
