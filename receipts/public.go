package receipts

import (
	"fmt"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// BatchPublic are a batch proof's public values. Field elements are
// 0x-prefixed lowercase hex. Which of them enter the proof's public witness,
// and how, depends on the circuit (PublicInputs): CircuitV1 takes the eight
// values in this order; CircuitV2 takes one digest of all nine.
type BatchPublic struct {
	Root                  string `json:"root"`
	ModelVersion          string `json:"model_version"`
	RegistryRoot          string `json:"registry_root"`
	WorkerID              string `json:"worker_id"`
	LeafCount             uint64 `json:"leaf_count"`
	TotalPromptTokens     uint64 `json:"total_prompt_tokens"`
	TotalCompletionTokens uint64 `json:"total_completion_tokens"`
	Sequence              uint64 `json:"sequence"`
	// Time is when the batch was cut (v2 only; UTC). The registry root must
	// be the one in force at this time, and the worker signs it.
	Time *time.Time `json:"time,omitempty"`
}

// fieldElements parses the four field-element values in order, rejecting
// non-canonical encodings.
func (p *BatchPublic) fieldElements() ([]fr.Element, error) {
	out := make([]fr.Element, 0, 4)
	for _, f := range []struct{ name, v string }{
		{"root", p.Root}, {"model_version", p.ModelVersion}, {"registry_root", p.RegistryRoot}, {"worker_id", p.WorkerID},
	} {
		e, err := ParseElement(f.v)
		if err != nil {
			return nil, fmt.Errorf("batch %s: %w", f.name, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Elements returns the eight v1 public inputs as field elements in circuit
// order, rejecting non-canonical encodings.
func (p *BatchPublic) Elements() ([]fr.Element, error) {
	out, err := p.fieldElements()
	if err != nil {
		return nil, err
	}
	for _, v := range []uint64{p.LeafCount, p.TotalPromptTokens, p.TotalCompletionTokens, p.Sequence} {
		out = append(out, u64(v))
	}
	return out, nil
}
