// Package keys manages a worker's signing key: EdDSA on BN254's twisted
// Edwards curve (gnark-crypto ecc/bn254/twistededwards/eddsa), the key that
// proves a worker's identity at registration and later signs its receipt
// batches in the zk circuit.
//
// Signatures hash with Poseidon2 over BN254 Fr in Merkle–Damgård mode with
// gnark-crypto's default parameters (ecc/bn254/fr/poseidon2
// NewMerkleDamgardHasher), the hasher the receipts circuit uses. The EdDSA
// challenge is H(R.X, R.Y, A.X, A.Y, m₁, …, mₙ): a message is a sequence of
// field elements, each written as 32 bytes big-endian and canonical (< r).
// Sign and Verify take such a message. Arbitrary bytes are signed with
// SignBytes, which first maps them to two elements: SHA-256 of the bytes,
// split into its high and low 128-bit halves (the same limb split receipts
// use for byte digests).
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/receipts"
)

// File format identifiers written into every key file.
const (
	FileType    = "tollgate-worker-key"
	FileVersion = 1
	Curve       = "bn254-twistededwards"
	Scheme      = "eddsa-poseidon2"
)

// ElementSize is the byte size of one message element.
const ElementSize = fr.Bytes

// Key is a worker's private signing key.
type Key struct {
	priv *eddsa.PrivateKey
}

// Generate creates a key from r (crypto/rand when nil).
func Generate(r io.Reader) (*Key, error) {
	if r == nil {
		r = rand.Reader
	}
	priv, err := eddsa.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generate worker key: %w", err)
	}
	return &Key{priv: priv}, nil
}

// Public is the key's public half.
func (k *Key) Public() *eddsa.PublicKey { return &k.priv.PublicKey }

// PublicHex is the public key in its 32-byte compressed form, lowercase hex.
func (k *Key) PublicHex() string { return PublicKeyHex(k.Public()) }

// WorkerID is the worker's ID for this key (see WorkerID).
func (k *Key) WorkerID() string { return WorkerID(k.Public()) }

// Sign signs msg, a sequence of canonical 32-byte field elements.
func (k *Key) Sign(msg []byte) ([]byte, error) {
	if err := checkElements(msg); err != nil {
		return nil, err
	}
	return k.priv.Sign(msg, poseidon2.NewMerkleDamgardHasher())
}

// SignBytes signs arbitrary bytes via BytesMessage.
func (k *Key) SignBytes(data []byte) ([]byte, error) { return k.Sign(BytesMessage(data)) }

// Verify checks sig over msg (canonical 32-byte field elements) by pub.
func Verify(pub *eddsa.PublicKey, sig, msg []byte) error {
	if err := checkElements(msg); err != nil {
		return err
	}
	ok, err := pub.Verify(sig, msg, poseidon2.NewMerkleDamgardHasher())
	if err != nil {
		return fmt.Errorf("invalid signature: %w", err)
	}
	if !ok {
		return errors.New("invalid signature")
	}
	return nil
}

// VerifyBytes checks a SignBytes signature.
func VerifyBytes(pub *eddsa.PublicKey, sig, data []byte) error {
	return Verify(pub, sig, BytesMessage(data))
}

// BytesMessage maps arbitrary bytes to a two-element message: SHA-256(data)
// split into its high and low 128-bit halves, each left-padded to 32 bytes.
func BytesMessage(data []byte) []byte {
	d := sha256.Sum256(data)
	msg := make([]byte, 2*ElementSize)
	copy(msg[ElementSize-16:ElementSize], d[:16])
	copy(msg[2*ElementSize-16:], d[16:])
	return msg
}

func checkElements(msg []byte) error {
	if len(msg) == 0 || len(msg)%ElementSize != 0 {
		return fmt.Errorf("message of %d bytes is not a sequence of %d-byte field elements", len(msg), ElementSize)
	}
	var e fr.Element
	for i := 0; i < len(msg); i += ElementSize {
		if err := e.SetBytesCanonical(msg[i : i+ElementSize]); err != nil {
			return fmt.Errorf("message element %d is not canonical: %w", i/ElementSize, err)
		}
	}
	return nil
}

// WorkerID names a worker by its public key (receipts.WorkerID: Poseidon2
// over the key's affine coordinates, 0x-prefixed hex).
func WorkerID(pub *eddsa.PublicKey) string { return receipts.WorkerID(pub) }

// PublicKeyHex renders a public key in compressed form as lowercase hex.
func PublicKeyHex(pub *eddsa.PublicKey) string { return hex.EncodeToString(pub.Bytes()) }

// ParsePublicKey reads a public key written by PublicKeyHex, checking that it
// is a valid point of the curve's prime-order subgroup.
func ParsePublicKey(s string) (*eddsa.PublicKey, error) {
	if len(s) != 2*publicKeySize {
		return nil, fmt.Errorf("public key must be %d hex characters", 2*publicKeySize)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not hex: %w", err)
	}
	var pub eddsa.PublicKey
	if _, err := pub.SetBytes(b); err != nil {
		return nil, fmt.Errorf("public key is not a curve point: %w", err)
	}
	return &pub, nil
}

// keyFile is the on-disk JSON form of a Key.
type keyFile struct {
	Type       string `json:"type"`
	Version    int    `json:"version"`
	Curve      string `json:"curve"`
	Scheme     string `json:"scheme"`
	PublicKey  string `json:"public_key"`
	WorkerID   string `json:"worker_id"`
	PrivateKey string `json:"private_key"` // gnark-crypto PrivateKey.Bytes(), hex
}

// Write writes k as a versioned JSON key file.
func (k *Key) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(keyFile{
		Type: FileType, Version: FileVersion, Curve: Curve, Scheme: Scheme,
		PublicKey: k.PublicHex(), WorkerID: k.WorkerID(),
		PrivateKey: hex.EncodeToString(k.priv.Bytes()),
	})
}

// Read parses a key file written by Write.
func Read(r io.Reader) (*Key, error) {
	var f keyFile
	dec := json.NewDecoder(io.LimitReader(r, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	switch {
	case f.Type != FileType:
		return nil, fmt.Errorf("key file: type %q, want %q", f.Type, FileType)
	case f.Version != FileVersion:
		return nil, fmt.Errorf("key file: version %d is not supported (want %d)", f.Version, FileVersion)
	case f.Curve != Curve || f.Scheme != Scheme:
		return nil, fmt.Errorf("key file: curve %q scheme %q, want %q %q", f.Curve, f.Scheme, Curve, Scheme)
	}
	raw, err := hex.DecodeString(f.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("key file: private key is not hex: %w", err)
	}
	var priv eddsa.PrivateKey
	if _, err := priv.SetBytes(raw); err != nil {
		return nil, fmt.Errorf("key file: private key: %w", err)
	}
	k := &Key{priv: &priv}
	if f.PublicKey != "" && f.PublicKey != k.PublicHex() {
		return nil, errors.New("key file: public key does not match the private key")
	}
	return k, nil
}

// Save writes k to a new file at path with mode 0600. It refuses to
// overwrite an existing file.
func Save(path string, k *Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("save worker key: %w", err)
	}
	if err := errors.Join(k.Write(f), f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return fmt.Errorf("save worker key: %w", err)
	}
	return nil
}

// ErrKeyFileMode is returned by Load for a key file that group or others
// can access.
var ErrKeyFileMode = errors.New("key file is accessible by group or others")

// Load reads a key file, refusing one whose permissions let group or others
// read, write or execute it.
func Load(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load worker key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load worker key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("load worker key: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load worker key %s: mode %04o: %w; run chmod 600 %s", path, perm, ErrKeyFileMode, path)
	}
	k, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("load worker key %s: %w", path, err)
	}
	return k, nil
}

// publicKeySize is the compressed public key size in bytes.
const publicKeySize = 32
