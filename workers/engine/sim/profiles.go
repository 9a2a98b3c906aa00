package sim

import "time"

// Profile is the latency model of one model on one GPU, in the style of
// llm-d's inference simulator:
//
//	TTFT = (PrefillOverhead + PrefillPerToken × prompt tokens) × load × slowdown × jitter
//	ITL  = InterTokenLatency × load × slowdown × jitter
//	load = 1 + (TimeFactorUnderLoad − 1) × (running − 1) / (MaxNumSeqs − 1)
//
// where running is the number of sequences running when the step is timed
// (at most MaxNumSeqs; more wait in a queue of at most MaxWaiting, beyond
// which requests are refused with 429), and jitter is a Gaussian factor
// N(1, JitterStdDev) clamped to [1 − JitterMax, 1 + JitterMax].
type Profile struct {
	Name                string        `yaml:"name" json:"name"`
	Model               string        `yaml:"model" json:"model"` // model name served by default
	GPU                 string        `yaml:"gpu" json:"gpu"`
	PrefillOverhead     time.Duration `yaml:"prefill_overhead" json:"prefill_overhead"`
	PrefillPerToken     time.Duration `yaml:"prefill_per_token" json:"prefill_per_token"`
	InterTokenLatency   time.Duration `yaml:"inter_token_latency" json:"inter_token_latency"`
	TimeFactorUnderLoad float64       `yaml:"time_factor_under_load" json:"time_factor_under_load"`
	MaxNumSeqs          int           `yaml:"max_num_seqs" json:"max_num_seqs"`
	MaxWaiting          int           `yaml:"max_waiting" json:"max_waiting"`
	JitterStdDev        float64       `yaml:"jitter_stddev" json:"jitter_stddev"`
	JitterMax           float64       `yaml:"jitter_max" json:"jitter_max"`
	ContextLength       int           `yaml:"context_length" json:"context_length"`
	KVCacheTokens       int           `yaml:"kv_cache_tokens" json:"kv_cache_tokens"`
	EmbeddingDim        int           `yaml:"embedding_dim" json:"embedding_dim"`
}

// Profiles are the built-in profiles, by name. The numbers are estimates for
// Llama-3.1-8B-Instruct in BF16 under vLLM, derived from each GPU's memory
// bandwidth (decode reads the 16 GB of weights once per step) and dense BF16
// throughput (prefill costs about 2 × 8e9 FLOP per token at ~40 % MFU), plus
// a fixed scheduling/launch overhead; they are in line with public vLLM
// benchmark reports at low concurrency but are not measurements. KV-cache
// capacity is what is left of GPU memory after weights at 0.9 utilisation,
// at 128 KiB per token (32 layers × 8 KV heads × 128 dims × 2 × BF16).
//
//	llama3-8b-h100  H100 SXM 80 GB, 3.35 TB/s, 989 TFLOPS: ITL 7 ms, 0.04 ms/prompt token
//	llama3-8b-a100  A100 SXM 80 GB, 2.0 TB/s, 312 TFLOPS:  ITL 11 ms, 0.13 ms/prompt token
//	llama3-8b-l40s  L40S 48 GB, 0.86 TB/s, 362 TFLOPS:     ITL 22 ms, 0.11 ms/prompt token
//	sim-tiny        a fast toy profile for tests and demos
func Profiles() map[string]Profile {
	return map[string]Profile{
		"llama3-8b-h100": {
			Name: "llama3-8b-h100", Model: "llama3-8b", GPU: "NVIDIA H100 80GB HBM3",
			PrefillOverhead: 15 * time.Millisecond, PrefillPerToken: 40 * time.Microsecond,
			InterTokenLatency: 7 * time.Millisecond, TimeFactorUnderLoad: 2.0,
			MaxNumSeqs: 256, MaxWaiting: 1024, JitterStdDev: 0.05, JitterMax: 0.15,
			ContextLength: 8192, KVCacheTokens: 450_000, EmbeddingDim: 1024,
		},
		"llama3-8b-a100": {
			Name: "llama3-8b-a100", Model: "llama3-8b", GPU: "NVIDIA A100-SXM4-80GB",
			PrefillOverhead: 20 * time.Millisecond, PrefillPerToken: 130 * time.Microsecond,
			InterTokenLatency: 11 * time.Millisecond, TimeFactorUnderLoad: 2.2,
			MaxNumSeqs: 256, MaxWaiting: 1024, JitterStdDev: 0.05, JitterMax: 0.15,
			ContextLength: 8192, KVCacheTokens: 450_000, EmbeddingDim: 1024,
		},
		"llama3-8b-l40s": {
			Name: "llama3-8b-l40s", Model: "llama3-8b", GPU: "NVIDIA L40S",
			PrefillOverhead: 25 * time.Millisecond, PrefillPerToken: 110 * time.Microsecond,
			InterTokenLatency: 22 * time.Millisecond, TimeFactorUnderLoad: 2.5,
			MaxNumSeqs: 128, MaxWaiting: 512, JitterStdDev: 0.05, JitterMax: 0.15,
			ContextLength: 8192, KVCacheTokens: 200_000, EmbeddingDim: 1024,
		},
		"sim-tiny": {
			Name: "sim-tiny", Model: "sim-tiny", GPU: "none",
			PrefillOverhead: time.Millisecond, PrefillPerToken: 10 * time.Microsecond,
			InterTokenLatency: time.Millisecond, TimeFactorUnderLoad: 1.5,
			MaxNumSeqs: 16, MaxWaiting: 64, JitterStdDev: 0.05, JitterMax: 0.15,
			ContextLength: 2048, KVCacheTokens: 32_768, EmbeddingDim: 64,
		},
	}
}

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "llama3-8b-h100"

// Validate checks a profile's numbers, naming the bad field.
func (p Profile) Validate() error {
	switch {
	case p.Name == "":
		return errField("name", "must not be empty")
	case p.PrefillOverhead < 0 || p.PrefillPerToken < 0 || p.InterTokenLatency < 0:
		return errField("prefill_overhead/prefill_per_token/inter_token_latency", "must not be negative")
	case p.TimeFactorUnderLoad < 1:
		return errField("time_factor_under_load", "must be >= 1")
	case p.MaxNumSeqs < 1:
		return errField("max_num_seqs", "must be >= 1")
	case p.MaxWaiting < 0:
		return errField("max_waiting", "must be >= 0")
	case p.JitterStdDev < 0 || p.JitterMax < 0 || p.JitterMax >= 1:
		return errField("jitter_stddev/jitter_max", "must be >= 0, and jitter_max < 1")
	case p.ContextLength < 16:
		return errField("context_length", "must be >= 16")
	case p.EmbeddingDim < 1 || p.EmbeddingDim > 65536:
		return errField("embedding_dim", "must be in [1, 65536]")
	case p.KVCacheTokens < 0:
		return errField("kv_cache_tokens", "must be >= 0")
	}
	return nil
}
