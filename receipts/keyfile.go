package receipts

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/consensys/gnark"
	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
)

// KeyHeader is the first line of every proving or verifying key file: one
// JSON object, then a newline, then gnark's binary encoding.
type KeyHeader struct {
	Kind      string `json:"kind"` // "pk" or "vk"
	Circuit   string `json:"circuit"`
	Capacity  int    `json:"capacity"`
	Gnark     string `json:"gnark"`
	Curve     string `json:"curve"`
	Ceremony  string `json:"ceremony,omitempty"` // "dev" (single-party set-up) or "mpc"
	Contribs  int    `json:"contributions,omitempty"`
	Reference string `json:"reference,omitempty"` // free text, e.g. the ceremony transcript
}

// GnarkVersion is the version of gnark linked into this binary, as gnark
// itself reports it ("v0.16.0"). Key files record it: gnark's binary key
// encoding is only guaranteed within one version.
func GnarkVersion() string { return "v" + gnark.Version.String() }

const maxHeader = 4096

// WriteKeyHeader writes h as the key file's first line.
func WriteKeyHeader(w io.Writer, h KeyHeader) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadKeyHeader reads and checks a key file's first line: it must be of
// the given kind and built by the same gnark version as this binary.
func ReadKeyHeader(r *bufio.Reader, kind string) (KeyHeader, error) {
	var h KeyHeader
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return h, errors.New("key header longer than the buffer")
		}
		return h, fmt.Errorf("read key header: %w", err)
	}
	if len(line) > maxHeader {
		return h, errors.New("key header too long")
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return h, fmt.Errorf("key header: %w", err)
	}
	switch {
	case h.Kind != kind:
		return h, fmt.Errorf("key file holds a %q key, want %q", h.Kind, kind)
	case h.Curve != ecc.BN254.String():
		return h, fmt.Errorf("key is for curve %q, want %s", h.Curve, ecc.BN254)
	case h.Gnark != GnarkVersion():
		return h, fmt.Errorf("key was built with gnark %s, this binary links %s", h.Gnark, GnarkVersion())
	case h.Capacity < 2 || h.Capacity&(h.Capacity-1) != 0:
		return h, fmt.Errorf("key capacity %d is not a power of two", h.Capacity)
	}
	return h, nil
}

// VerifyingKey is a parsed verifying key file.
type VerifyingKey struct {
	Header KeyHeader
	ID     string // see KeyID
	Key    groth16.VerifyingKey
}

// KeyID names a verifying key: circuit, capacity and a hash of the file.
func KeyID(h KeyHeader, file []byte) string {
	sum := sha256.Sum256(file)
	return fmt.Sprintf("%s-%d-%x", h.Circuit, h.Capacity, sum[:6])
}

// ParseVerifyingKey parses a verifying key file (header line + gnark binary).
func ParseVerifyingKey(file []byte) (*VerifyingKey, error) {
	br := bufio.NewReaderSize(bytes.NewReader(file), maxHeader)
	h, err := ReadKeyHeader(br, "vk")
	if err != nil {
		return nil, err
	}
	vk := groth16.NewVerifyingKey(ecc.BN254)
	if _, err := vk.ReadFrom(br); err != nil {
		return nil, fmt.Errorf("verifying key: %w", err)
	}
	return &VerifyingKey{Header: h, ID: KeyID(h, file), Key: vk}, nil
}
