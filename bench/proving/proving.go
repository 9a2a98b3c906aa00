// Package proving measures the receipt prover: for each batch capacity, the
// circuit's constraints per receipt, the time to prove a full batch and to
// verify its proof, the proof's size and the receipts proven per second;
// and, at low load, how long a receipt takes from its response to proven
// through the production prover pipeline (ledger, worker countersignature,
// proof, store). `tollgate bench receipts` runs it.
package proving

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/twistededwards/eddsa"

	"github.com/tollgate-ai/tollgate/bench/report"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/receipts/ledger"
	"github.com/tollgate-ai/tollgate/receipts/prover"
	"github.com/tollgate-ai/tollgate/workers"
	"github.com/tollgate-ai/tollgate/workers/keys"
	"github.com/tollgate-ai/tollgate/zk"
)

// Config configures Run.
type Config struct {
	// Capacities are the batch capacities measured (each one of
	// zk.Capacities). 256 and 1024 need minutes of key set-up the first
	// time; keys are cached in KeyDir.
	Capacities []int `json:"capacities"`
	// KeyDir holds development keys (batch-N.pk/.vk), made there when
	// missing.
	KeyDir string `json:"key_dir"`
	// Proofs is how many full batches are proven per capacity.
	Proofs int `json:"proofs"`
	// Verifies is how many times each proof is verified.
	Verifies int `json:"verifies"`
	// LatencyReceipts is how many receipts go one at a time through the
	// prover pipeline to measure response → proven; 0 skips it.
	LatencyReceipts int `json:"latency_receipts"`
	// MaxAge and Interval configure that pipeline as prover.Config does
	// (defaults 1s and 250ms, the production defaults).
	MaxAge   time.Duration `json:"max_age"`
	Interval time.Duration `json:"interval"`
	// Progress, when set, gets a one-line status at each step.
	Progress func(line string) `json:"-"`
}

// DefaultConfig measures capacities 8 and 64 with keys in the test key
// cache shared with `go test`.
func DefaultConfig() Config {
	return Config{Capacities: []int{8, 64}, KeyDir: zk.TestKeyDir(), Proofs: 3, Verifies: 20,
		LatencyReceipts: 5, MaxAge: time.Second, Interval: 250 * time.Millisecond}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if len(c.Capacities) == 0 {
		return errors.New("capacities: none given")
	}
	for _, n := range c.Capacities {
		if !slices.Contains(zk.Capacities, n) {
			return fmt.Errorf("capacities: %d is not one of %v", n, zk.Capacities)
		}
	}
	switch {
	case c.KeyDir == "":
		return errors.New("key_dir: empty")
	case c.Proofs < 1 || c.Proofs > 1000:
		return fmt.Errorf("proofs: %d, want 1..1000", c.Proofs)
	case c.Verifies < 1 || c.Verifies > 100000:
		return fmt.Errorf("verifies: %d, want 1..100000", c.Verifies)
	case c.LatencyReceipts < 0 || c.LatencyReceipts > 1000:
		return fmt.Errorf("latency_receipts: %d, want 0..1000", c.LatencyReceipts)
	case c.MaxAge <= 0 || c.MaxAge > time.Hour:
		return fmt.Errorf("max_age: %s, want (0, 1h]", c.MaxAge)
	case c.Interval <= 0 || c.Interval > time.Minute:
		return fmt.Errorf("interval: %s, want (0, 1m]", c.Interval)
	}
	return nil
}

// CapacityResult is one capacity's figures.
type CapacityResult struct {
	Capacity            int     `json:"capacity"`
	Constraints         int     `json:"constraints"`
	ConstraintsPerLeaf  float64 `json:"constraints_per_receipt"`
	SetupSeconds        float64 `json:"setup_seconds,omitempty"` // 0: keys were cached
	ProveSeconds        float64 `json:"prove_seconds"`           // mean per full batch (includes the prover's own verify)
	ProveSecondsMin     float64 `json:"prove_seconds_min"`
	ReceiptsPerSecond   float64 `json:"receipts_per_second"` // capacity / mean prove time, one prover
	VerifyMilliseconds  float64 `json:"verify_ms"`
	ProofBytes          int     `json:"proof_bytes"`
	ProvingKeyBytes     int64   `json:"proving_key_bytes"`
	VerifyingKeyBytes   int64   `json:"verifying_key_bytes"`
	ProveMillisPerLeaf  float64 `json:"prove_ms_per_receipt"`
	VerifyMicrosPerLeaf float64 `json:"verify_us_per_receipt"`
}

// LatencyResult is the low-load pipeline measurement.
type LatencyResult struct {
	Receipts      int           `json:"receipts"`
	MaxAge        time.Duration `json:"max_age"`
	Interval      time.Duration `json:"interval"`
	P50Seconds    float64       `json:"p50_seconds"`
	MaxSeconds    float64       `json:"max_seconds"`
	MinSeconds    float64       `json:"min_seconds"`
	Samples       []float64     `json:"samples_seconds"`
	BatchCapacity int           `json:"batch_capacity"` // the capacity the pipeline chose for one receipt
}

// Result is a whole run.
type Result struct {
	Env        report.Env       `json:"env"`
	Config     Config           `json:"config"`
	Capacities []CapacityResult `json:"capacities"`
	Latency    *LatencyResult   `json:"latency,omitempty"`
}

// Run measures every capacity, then the pipeline's latency.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench receipts: %w", err)
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	res := &Result{Env: report.CurrentEnv(), Config: cfg}
	for _, c := range cfg.Capacities {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := measureCapacity(ctx, cfg, c, progress)
		if err != nil {
			return nil, fmt.Errorf("capacity %d: %w", c, err)
		}
		res.Capacities = append(res.Capacities, *r)
	}
	if cfg.LatencyReceipts > 0 {
		lr, err := measureLatency(ctx, cfg, progress)
		if err != nil {
			return nil, fmt.Errorf("pipeline latency: %w", err)
		}
		res.Latency = lr
	}
	return res, nil
}

func measureCapacity(ctx context.Context, cfg Config, capacity int, progress func(string)) (*CapacityResult, error) {
	progress(fmt.Sprintf("capacity %d: compiling the circuit", capacity))
	cs, err := zk.Compile(capacity)
	if err != nil {
		return nil, err
	}
	r := &CapacityResult{Capacity: capacity, Constraints: cs.GetNbConstraints()}
	r.ConstraintsPerLeaf = float64(r.Constraints) / float64(capacity)

	pkPath, vkPath := zk.KeyFiles(cfg.KeyDir, capacity)
	if !exists(pkPath) || !exists(vkPath) {
		progress(fmt.Sprintf("capacity %d: setting up development keys in %s (once)", capacity, cfg.KeyDir))
		start := time.Now()
		if err := zk.EnsureDevKeys(cfg.KeyDir, capacity); err != nil {
			return nil, err
		}
		r.SetupSeconds = time.Since(start).Seconds()
	}
	r.ProvingKeyBytes, r.VerifyingKeyBytes = fileSize(pkPath), fileSize(vkPath)
	progress(fmt.Sprintf("capacity %d: loading keys", capacity))
	p, err := zk.LoadProver(cfg.KeyDir, capacity)
	if err != nil {
		return nil, err
	}
	batch, err := fullBatch(capacity)
	if err != nil {
		return nil, err
	}
	var total time.Duration
	var proof string
	var pub receipts.BatchPublic
	for i := range cfg.Proofs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		progress(fmt.Sprintf("capacity %d: proof %d/%d", capacity, i+1, cfg.Proofs))
		start := time.Now()
		proof, pub, err = p.Prove(batch)
		d := time.Since(start)
		if err != nil {
			return nil, err
		}
		total += d
		if s := d.Seconds(); i == 0 || s < r.ProveSecondsMin {
			r.ProveSecondsMin = s
		}
	}
	r.ProveSeconds = total.Seconds() / float64(cfg.Proofs)
	r.ReceiptsPerSecond = float64(capacity) / r.ProveSeconds
	r.ProveMillisPerLeaf = r.ProveSeconds * 1e3 / float64(capacity)
	raw, err := base64.StdEncoding.DecodeString(proof)
	if err != nil {
		return nil, err
	}
	r.ProofBytes = len(raw)

	progress(fmt.Sprintf("capacity %d: verifying %d times", capacity, cfg.Verifies))
	start := time.Now()
	for range cfg.Verifies {
		if err := receipts.VerifyProof(p.VK, &pub, proof); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	r.VerifyMilliseconds = time.Since(start).Seconds() * 1e3 / float64(cfg.Verifies)
	r.VerifyMicrosPerLeaf = r.VerifyMilliseconds * 1e3 / float64(capacity)
	return r, nil
}

// fullBatch is a signed batch of capacity receipts under a fresh worker key,
// with its model version in a two-entry registry.
func fullBatch(capacity int) (*zk.Batch, error) {
	key, err := eddsa.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	mv := receipts.ModelVersionCommitment("bench-model", sha256.Sum256([]byte("bench weights")))
	other := receipts.ModelVersionCommitment("other-model", sha256.Sum256([]byte("other weights")))
	wid := receipts.WorkerIDElement(&key.PublicKey)
	reg, err := receipts.NewAdmissionRegistry([]fr.Element{receipts.AdmissionLeaf(wid, other), receipts.AdmissionLeaf(wid, mv)})
	if err != nil {
		return nil, err
	}
	idx, path, ok := reg.Path(receipts.AdmissionLeaf(wid, mv))
	if !ok {
		return nil, errors.New("worker missing from its admission registry")
	}
	b := &zk.Batch{Capacity: capacity, ModelVersion: mv, RegistryRoot: reg.Root(), RegistryIndex: idx, RegistryPath: path,
		PublicKey: &key.PublicKey, Sequence: 1, Time: time.Unix(1800000000, 0).UTC()}
	for i := range capacity {
		var rc fr.Element
		rc.SetUint64(uint64(1_000_000 + i))
		b.Leaves = append(b.Leaves, zk.LeafInput{RequestCommitment: rc, PromptTokens: uint64(100 + i%50), CompletionTokens: uint64(200 + i%300)})
	}
	msg, err := b.Message()
	if err != nil {
		return nil, err
	}
	if b.Signature, err = receipts.SignBatch(key, msg); err != nil {
		return nil, err
	}
	return b, nil
}

// completions is the worker's own record of what it produced, which its
// countersigner checks a batch against.
type completions map[string]*task.Completion

func (m completions) Produced(id string) (*task.Completion, bool) {
	c, ok := m[id]
	if !ok {
		return nil, false
	}
	cp := *c
	return &cp, true
}

// measureLatency records receipts one at a time in an embedded ledger and
// runs the production pipeline's passes (prover.Pipeline.Step, every
// Interval, as prover.Run does) until each is proven: the time from Record
// (the gateway's last step before the response) to the pass that proved it.
func measureLatency(ctx context.Context, cfg Config, progress func(string)) (*LatencyResult, error) {
	dir, err := os.MkdirTemp("", "tollgate-bench-receipts-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	st, err := ledger.OpenBolt(filepath.Join(dir, "ledger.db"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	logger := slog.New(slog.DiscardHandler)
	operator, err := receipts.GenerateOperatorKey(rand.Reader) // signs this run's registry root history
	if err != nil {
		return nil, err
	}
	l := ledger.New(st, ledger.Options{KeyDir: cfg.KeyDir, Logger: logger, Operator: operator})
	weights := sha256.Sum256([]byte("bench weights"))
	model := task.ModelVersion{Name: "bench-model", Digest: hex.EncodeToString(weights[:])}
	key, err := keys.Generate(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := l.AdmitWorker(ctx, key.WorkerID(), model); err != nil {
		return nil, err
	}
	own := completions{}
	signer := workers.NewCountersigner(key, own, logger)
	p, err := prover.New(l, prover.Config{KeyDir: cfg.KeyDir, MaxAge: cfg.MaxAge, Interval: cfg.Interval, Logger: logger,
		Countersign: func(ctx context.Context, _ string, req *workers.CountersignRequest) (*workers.CountersignResponse, error) {
			return signer.Countersign(ctx, req)
		}})
	if err != nil {
		return nil, err
	}
	lr := &LatencyResult{Receipts: cfg.LatencyReceipts, MaxAge: cfg.MaxAge, Interval: cfg.Interval}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for i := range cfg.LatencyReceipts {
		progress(fmt.Sprintf("pipeline: receipt %d/%d", i+1, cfg.LatencyReceipts))
		reqID := fmt.Sprintf("bench-%d", i)
		c := &task.Completion{RequestID: reqID, WorkerID: key.WorkerID(), Model: model.Name, ModelDigest: model.Digest,
			RequestDigest: hexDigest("request " + reqID), ResponseDigest: hexDigest("response " + reqID), Subject: "bench",
			PromptTokens: 20, CompletionTokens: 16, Time: time.Now().UTC()}
		own[reqID] = c
		start := time.Now()
		if err := l.Record(ctx, "rcpt_"+reqID, c); err != nil {
			return nil, err
		}
		for {
			n, err := p.Step(ctx)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
		lr.Samples = append(lr.Samples, time.Since(start).Seconds())
		if lr.BatchCapacity == 0 {
			lr.BatchCapacity = provenCapacity(ctx, l, "rcpt_"+reqID)
		}
	}
	sorted := slices.Clone(lr.Samples)
	sort.Float64s(sorted)
	lr.MinSeconds, lr.MaxSeconds = sorted[0], sorted[len(sorted)-1]
	lr.P50Seconds = sorted[(len(sorted)-1)/2]
	return lr, nil
}

// provenCapacity reads the batch capacity a proven receipt's proof used
// (0 when it cannot tell).
func provenCapacity(ctx context.Context, l *ledger.Ledger, id string) int {
	raw, err := l.Receipt(ctx, id)
	if err != nil {
		return 0
	}
	var r receipts.Receipt
	if err := json.Unmarshal(raw, &r); err != nil || r.Batch == nil {
		return 0
	}
	return r.Batch.Capacity
}

func hexDigest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
