package receipts

import (
	"fmt"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// BatchPublic are a batch proof's public inputs, in the circuit's order.
// Field elements are 0x-prefixed hex.
type BatchPublic struct {
	Root                  string `json:"root"`
	ModelVersion          string `json:"model_version"`
	RegistryRoot          string `json:"registry_root"`
	WorkerID              string `json:"worker_id"`
	LeafCount             uint64 `json:"leaf_count"`
	TotalPromptTokens     uint64 `json:"total_prompt_tokens"`
	TotalCompletionTokens uint64 `json:"total_completion_tokens"`
	Sequence              uint64 `json:"sequence"`
}

// Elements returns the public inputs as field elements in circuit order,
// rejecting non-canonical encodings.
func (p *BatchPublic) Elements() ([]fr.Element, error) {
	out := make([]fr.Element, 0, 8)
	for _, f := range []struct{ name, v string }{
		{"root", p.Root}, {"model_version", p.ModelVersion}, {"registry_root", p.RegistryRoot}, {"worker_id", p.WorkerID},
	} {
		e, err := ParseElement(f.v)
		if err != nil {
			return nil, fmt.Errorf("batch %s: %w", f.name, err)
		}
		out = append(out, e)
	}
	for _, v := range []uint64{p.LeafCount, p.TotalPromptTokens, p.TotalCompletionTokens, p.Sequence} {
		out = append(out, u64(v))
	}
	return out, nil
}
