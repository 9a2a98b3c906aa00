package task

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

// MaxModelNameLen bounds a model name anywhere it comes from outside.
const MaxModelNameLen = 256

// Bounds on a registration.
const (
	MaxRegisterModels   = 64
	MaxRegisterGPUs     = 64
	MaxWorkerConcurrent = 100_000
	MaxRegisterBytes    = 1 << 20
)

// Registered is an accepted worker, as the gateway's registry holds it.
type Registered struct {
	WorkerID       string         `json:"worker_id"`  // receipts.WorkerID of PublicKey
	PublicKey      string         `json:"public_key"` // hex, compressed
	URL            string         `json:"url"`
	Models         []ModelVersion `json:"models"`
	GPUs           []GPU          `json:"gpus"`
	MaxConcurrency int            `json:"max_concurrency"`
	SessionToken   string         `json:"session_token,omitempty"`
	// Provider names who runs the worker: ProviderID of the operator-issued
	// token it registered with (one token per provider), so the auditor
	// never has a provider check its own work.
	Provider string `json:"provider,omitempty"`
	// CountersignToken is the credential the gateway's provers present to
	// this worker's countersign route (a fresh random one per
	// registration). The gateway stores it in the ledger's shared meta and
	// returns it to the worker; it is never logged nor shared with the
	// worker registry.
	CountersignToken string `json:"-"`
}

// ProviderID is the public name of a provider token: the first 8 bytes of
// its SHA-256 in hex (the token itself stays secret).
func ProviderID(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:8])
}

// ValidateModelVersion checks a model version from outside: a printable name
// of 1..256 bytes and a 64-character lowercase hex digest.
func ValidateModelVersion(m ModelVersion) error {
	if err := printableName(m.Name, MaxModelNameLen); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if !IsHexDigest(m.Digest) {
		return fmt.Errorf("digest of %q must be 64 lowercase hex characters", m.Name)
	}
	if m.ContextLength < 0 || m.ContextLength > 1<<24 {
		return fmt.Errorf("context_length of %q out of range", m.Name)
	}
	if len(m.OwnedBy) > 256 {
		return fmt.Errorf("owned_by of %q longer than 256 bytes", m.Name)
	}
	if err := ValidateCapabilities(m.Capabilities); err != nil {
		return fmt.Errorf("capabilities of %q: %w", m.Name, err)
	}
	return nil
}

// ValidateCapabilities checks a declared capability list: known names
// (KnownCapabilities), each at most once.
func ValidateCapabilities(caps []Capability) error {
	if len(caps) > len(KnownCapabilities) {
		return fmt.Errorf("at most %d capabilities", len(KnownCapabilities))
	}
	for i, c := range caps {
		if !slices.Contains(KnownCapabilities, c) {
			return fmt.Errorf("unknown capability %q (known: %s)", c, CapabilityList(KnownCapabilities))
		}
		if slices.Contains(caps[:i], c) {
			return fmt.Errorf("capability %q listed twice", c)
		}
	}
	return nil
}

// CapabilityList joins caps with commas, as the registration line and the
// --capabilities flag write them.
func CapabilityList(caps []Capability) string {
	s := make([]string, len(caps))
	for i, c := range caps {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

// ParseCapabilities reads a --capabilities value: "none" (or empty) for
// none, "all" for KnownCapabilities, or a comma-separated list of names.
func ParseCapabilities(s string) ([]Capability, error) {
	switch s = strings.TrimSpace(s); s {
	case "", "none":
		return []Capability{}, nil
	case "all":
		return slices.Clone(KnownCapabilities), nil
	}
	var caps []Capability
	for _, name := range strings.Split(s, ",") {
		caps = append(caps, Capability(strings.TrimSpace(name)))
	}
	if err := ValidateCapabilities(caps); err != nil {
		return nil, err
	}
	return caps, nil
}

// ValidateGPU checks one GPU's telemetry from outside.
func ValidateGPU(g GPU) error {
	switch {
	case g.Index < 0 || g.Index >= MaxRegisterGPUs:
		return fmt.Errorf("index %d out of range", g.Index)
	case len(g.Name) > 256 || len(g.UUID) > 128:
		return fmt.Errorf("name or uuid too long")
	case g.GPUUtilPct > 100 || g.MemUtilPct > 100:
		return fmt.Errorf("utilization above 100%%")
	case g.MemoryUsedMiB > g.MemoryTotalMiB && g.MemoryTotalMiB > 0:
		return fmt.Errorf("memory used above total")
	case g.PowerW < 0 || g.PowerW > 1e5:
		return fmt.Errorf("power out of range")
	}
	return nil
}

// ValidateHeartbeat checks a heartbeat from outside.
func ValidateHeartbeat(hb *Heartbeat) error {
	switch {
	case hb == nil || hb.WorkerID == "" || len(hb.WorkerID) > 128:
		return apierr.BadRequest("worker_id", "invalid_heartbeat", "worker_id must be 1..128 bytes")
	case len(hb.GPUs) > MaxRegisterGPUs:
		return apierr.BadRequest("gpus", "invalid_heartbeat", "at most %d GPUs", MaxRegisterGPUs)
	case hb.InFlight < 0 || hb.Load.Waiting < 0 || hb.Load.Running < 0 || hb.Load.KVCacheUsage < 0 || hb.Load.KVCacheUsage > 1:
		return apierr.BadRequest("load", "invalid_heartbeat", "load counts must be >= 0 and kv_cache_usage in [0, 1]")
	case len(hb.Load.Source) > 64:
		return apierr.BadRequest("load", "invalid_heartbeat", "load source longer than 64 bytes")
	case len(hb.Load.Unknown) > 3:
		return apierr.BadRequest("load", "invalid_heartbeat", "load.unknown names at most waiting, running and kv_cache_usage")
	}
	for _, u := range hb.Load.Unknown {
		if u != "waiting" && u != "running" && u != "kv_cache_usage" {
			return apierr.BadRequest("load", "invalid_heartbeat", "load.unknown: %q is not waiting, running or kv_cache_usage", u)
		}
	}
	for i, g := range hb.GPUs {
		if err := ValidateGPU(g); err != nil {
			return apierr.BadRequest("gpus", "invalid_heartbeat", "gpus[%d]: %v", i, err)
		}
	}
	return nil
}

func printableName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("must be 1..%d bytes", max)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("%q contains a space or non-printable character", s)
		}
	}
	return nil
}

// IsLowerHex reports whether s is lowercase hex.
func IsLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// IsHexDigest reports whether s is 64 lowercase hex characters.
func IsHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
