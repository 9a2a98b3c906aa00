package zk

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"sync"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/consensys/gnark/frontend"

	"github.com/tollgate-ai/tollgate/receipts"
)

// Ceremony kinds recorded in key headers.
const (
	CeremonyDev = "dev" // single-party groth16.Setup: the set-up party could forge proofs
	CeremonyMPC = "mpc" // gnark's Groth16 MPC (phase 1 + phase 2)
)

// KeyFiles are the file names of a capacity's keys inside a key directory.
func KeyFiles(dir string, capacity int) (pk, vk string) {
	base := filepath.Join(dir, fmt.Sprintf("batch-%d", capacity))
	return base + ".pk", base + ".vk"
}

func header(kind string, capacity int, ceremony string, contribs int) receipts.KeyHeader {
	return receipts.KeyHeader{Kind: kind, Circuit: CircuitID, Capacity: capacity, Gnark: receipts.GnarkVersion(),
		Curve: ecc.BN254.String(), Ceremony: ceremony, Contribs: contribs}
}

// SetupDev runs gnark's single-party Groth16 set-up for a capacity: for
// development only (whoever ran it holds the toxic waste).
func SetupDev(capacity int) (groth16.ProvingKey, groth16.VerifyingKey, error) {
	cs, err := Compile(capacity)
	if err != nil {
		return nil, nil, err
	}
	pk, vk, err := groth16.Setup(cs)
	if err != nil {
		return nil, nil, fmt.Errorf("groth16 setup (capacity %d): %w", capacity, err)
	}
	return pk, vk, nil
}

// WriteProvingKey writes a proving key with its header.
func WriteProvingKey(w io.Writer, capacity int, ceremony string, contribs int, pk groth16.ProvingKey) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := receipts.WriteKeyHeader(bw, header("pk", capacity, ceremony, contribs)); err != nil {
		return err
	}
	if _, err := pk.WriteRawTo(bw); err != nil {
		return fmt.Errorf("write proving key: %w", err)
	}
	return bw.Flush()
}

// WriteVerifyingKey writes a verifying key with its header.
func WriteVerifyingKey(w io.Writer, capacity int, ceremony string, contribs int, vk groth16.VerifyingKey) error {
	if err := receipts.WriteKeyHeader(w, header("vk", capacity, ceremony, contribs)); err != nil {
		return err
	}
	if _, err := vk.WriteTo(w); err != nil {
		return fmt.Errorf("write verifying key: %w", err)
	}
	return nil
}

// ReadProvingKey reads a proving key written by WriteProvingKey. Key files
// are the prover's own, so points are not subgroup-checked on load.
func ReadProvingKey(r io.Reader) (receipts.KeyHeader, groth16.ProvingKey, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	h, err := receipts.ReadKeyHeader(br, "pk")
	if err != nil {
		return h, nil, err
	}
	if h.Circuit != CircuitID {
		return h, nil, fmt.Errorf("proving key is for circuit %q, want %q", h.Circuit, CircuitID)
	}
	pk := groth16.NewProvingKey(ecc.BN254)
	if _, err := pk.UnsafeReadFrom(br); err != nil {
		return h, nil, fmt.Errorf("read proving key: %w", err)
	}
	return h, pk, nil
}

// SaveKeys writes a capacity's keys into dir atomically (temp file + rename).
func SaveKeys(dir string, capacity int, ceremony string, contribs int, pk groth16.ProvingKey, vk groth16.VerifyingKey) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pkPath, vkPath := KeyFiles(dir, capacity)
	if err := writeFileAtomic(pkPath, func(w io.Writer) error { return WriteProvingKey(w, capacity, ceremony, contribs, pk) }); err != nil {
		return err
	}
	return writeFileAtomic(vkPath, func(w io.Writer) error { return WriteVerifyingKey(w, capacity, ceremony, contribs, vk) })
}

func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Prover proves batches of one capacity.
type Prover struct {
	Capacity int
	VK       *receipts.VerifyingKey
	VKFile   []byte // the verifying key file as served at /v1/zk/keys/{id}
	pk       groth16.ProvingKey
	child    *Child // proves in this child process instead (pk not loaded here)
}

// LoadProver loads a capacity's keys from dir.
func LoadProver(dir string, capacity int) (*Prover, error) {
	return LoadProverWith(dir, capacity, nil)
}

// LoadProverWith loads a capacity's keys from dir; with a child, only the
// verifying key is loaded here and the child proves (loading the proving
// key itself, from the same directory).
func LoadProverWith(dir string, capacity int, child *Child) (*Prover, error) {
	pkPath, vkPath := KeyFiles(dir, capacity)
	vkFile, err := os.ReadFile(vkPath)
	if err != nil {
		return nil, err
	}
	vk, err := receipts.ParseVerifyingKey(vkFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", vkPath, err)
	}
	if vk.Header.Circuit != CircuitID || vk.Header.Capacity != capacity {
		return nil, fmt.Errorf("%s: key for %s capacity %d, want %s capacity %d", vkPath, vk.Header.Circuit, vk.Header.Capacity, CircuitID, capacity)
	}
	if child != nil {
		if _, err := os.Stat(pkPath); err != nil {
			return nil, err
		}
		return &Prover{Capacity: capacity, VK: vk, VKFile: vkFile, child: child}, nil
	}
	f, err := os.Open(pkPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, pk, err := ReadProvingKey(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkPath, err)
	}
	if h.Capacity != capacity {
		return nil, fmt.Errorf("%s: capacity %d, want %d", pkPath, h.Capacity, capacity)
	}
	if err := samePair(pk, vk.Key); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", pkPath, vkPath, err)
	}
	return &Prover{Capacity: capacity, VK: vk, VKFile: vkFile, pk: pk}, nil
}

// errKeyPair is a proving key and a verifying key from different set-ups.
var errKeyPair = errors.New("the proving key and the verifying key are not from the same set-up (was one of them replaced?)")

// samePair checks that pk and vk come from one Groth16 set-up: the set-up's
// α, β and δ, which both keys carry, must be equal. Every proof pk makes
// would fail vk otherwise, after a whole batch's proving time.
func samePair(pk groth16.ProvingKey, vk groth16.VerifyingKey) error {
	p, ok1 := pk.(*groth16bn254.ProvingKey)
	v, ok2 := vk.(*groth16bn254.VerifyingKey)
	if !ok1 || !ok2 {
		return fmt.Errorf("keys of types %T and %T, want BN254", pk, vk)
	}
	if !p.G1.Alpha.Equal(&v.G1.Alpha) || !p.G1.Beta.Equal(&v.G1.Beta) || !p.G1.Delta.Equal(&v.G1.Delta) ||
		!p.G2.Beta.Equal(&v.G2.Beta) || !p.G2.Delta.Equal(&v.G2.Delta) {
		return errKeyPair
	}
	return nil
}

// LoadProvers loads every capacity in Capacities whose keys are in dir,
// smallest first. Missing capacities are skipped; it fails if none is there.
func LoadProvers(dir string) ([]*Prover, error) { return LoadProversWith(dir, nil) }

// LoadProversWith is LoadProvers, proving in child when it is not nil.
func LoadProversWith(dir string, child *Child) ([]*Prover, error) {
	var out []*Prover
	for _, c := range Capacities {
		pkPath, vkPath := KeyFiles(dir, c)
		if _, err := os.Stat(pkPath); err != nil {
			continue
		}
		if _, err := os.Stat(vkPath); err != nil {
			continue
		}
		p, err := LoadProverWith(dir, c, child)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no proving keys in %s (run `tollgate keys setup`)", dir)
	}
	return out, nil
}

var proveMu sync.Mutex // one proof at a time: each already uses every core

// Prove proves b (whose capacity must be the prover's) and returns the
// base64 proof and the public inputs.
func (p *Prover) Prove(b *Batch) (string, receipts.BatchPublic, error) {
	if b.Capacity != p.Capacity {
		return "", receipts.BatchPublic{}, fmt.Errorf("batch capacity %d, prover capacity %d", b.Capacity, p.Capacity)
	}
	pub, err := b.Public()
	if err != nil {
		return "", pub, err
	}
	assignment, err := Assign(b)
	if err != nil {
		return "", pub, err
	}
	w, err := frontend.NewWitness(assignment, ecc.BN254.ScalarField())
	if err != nil {
		return "", pub, fmt.Errorf("witness: %w", err)
	}
	var enc string
	if p.child != nil {
		wb, err := w.MarshalBinary()
		if err != nil {
			return "", pub, fmt.Errorf("witness: %w", err)
		}
		raw, err := p.child.prove(p.Capacity, sha256.Sum256(p.VKFile), wb)
		if err != nil {
			return "", pub, fmt.Errorf("prove batch (capacity %d, %d leaves): %w", p.Capacity, len(b.Leaves), err)
		}
		// Keep only the canonical encoding, never the child's own bytes.
		proof, err := receipts.ReadProof(raw)
		if err != nil {
			return "", pub, fmt.Errorf("proof from the proving child: %w", err)
		}
		var buf bytes.Buffer
		if _, err := proof.WriteTo(&buf); err != nil {
			return "", pub, err
		}
		enc = base64.StdEncoding.EncodeToString(buf.Bytes())
	} else {
		cs, err := Compile(p.Capacity)
		if err != nil {
			return "", pub, err
		}
		proveMu.Lock()
		proof, err := groth16.Prove(cs, p.pk, w)
		proveMu.Unlock()
		if err != nil {
			return "", pub, fmt.Errorf("prove batch (capacity %d, %d leaves): %w", p.Capacity, len(b.Leaves), err)
		}
		var buf bytes.Buffer
		if _, err := proof.WriteTo(&buf); err != nil {
			return "", pub, err
		}
		enc = base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	// Check before anyone sees it: a proof that does not verify is a bug.
	if err := receipts.VerifyProof(p.VK, &pub, enc); err != nil {
		return "", pub, fmt.Errorf("fresh proof does not verify: %w", err)
	}
	return enc, pub, nil
}
