// Package telemetry reads GPU telemetry through NVML and serves it on a
// worker's /metrics in dcgm-exporter's names and units.
//
// NVML is reached through Lib, a small interface of the few calls used here,
// so the mapping is tested with go-nvml's pkg/nvml/mock. On a machine without
// an NVIDIA driver, nvml.Init fails; the collector then calls nothing else of
// NVML (not even Shutdown: the library's symbols are not loaded and the
// process would die), reports zero GPUs and logs that once.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Lib is the part of NVML the collector calls. FromNVML adapts an
// nvml.Interface (the real library or pkg/nvml/mock) to it.
type Lib interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(index int) (Device, nvml.Return)
}

// Device is the part of an NVML device handle the collector reads.
// nvml.Device and *mock.Device satisfy it.
type Device interface {
	GetName() (string, nvml.Return)
	GetUUID() (string, nvml.Return)
	GetMemoryInfo() (nvml.Memory, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetClockInfo(nvml.ClockType) (uint32, nvml.Return)
	GetMigMode() (current, pending int, ret nvml.Return)
	GetTotalEnergyConsumption() (uint64, nvml.Return)
}

// FromNVML adapts an nvml.Interface to Lib.
func FromNVML(l nvml.Interface) Lib { return nvmlLib{l} }

type nvmlLib struct{ l nvml.Interface }

func (n nvmlLib) Init() nvml.Return                  { return n.l.Init() }
func (n nvmlLib) Shutdown() nvml.Return              { return n.l.Shutdown() }
func (n nvmlLib) DeviceGetCount() (int, nvml.Return) { return n.l.DeviceGetCount() }
func (n nvmlLib) DeviceGetHandleByIndex(i int) (Device, nvml.Return) {
	d, ret := n.l.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS || d == nil {
		return nil, ret
	}
	return d, ret
}

// Collector reads the GPUs of this machine. Close releases NVML.
type Collector interface {
	GPUs(ctx context.Context) []task.GPU
	Close() error
}

// DefaultCacheTTL is how long one NVML read is served from cache. Heartbeats
// go out every second or faster; NVML reads take a few milliseconds per GPU.
const DefaultCacheTTL = 500 * time.Millisecond

// Option configures NewNVML.
type Option func(*NVML)

// WithClock injects the clock used for the read cache.
func WithClock(c clock.Clock) Option { return func(n *NVML) { n.clock = c } }

// WithCacheTTL sets how long a read is reused; 0 reads NVML on every call.
func WithCacheTTL(d time.Duration) Option { return func(n *NVML) { n.ttl = d } }

// WithLib replaces the system NVML library (tests pass pkg/nvml/mock).
func WithLib(l Lib) Option { return func(n *NVML) { n.lib = l } }

// NVML is the Collector backed by NVML.
type NVML struct {
	lib    Lib
	logger *slog.Logger
	clock  clock.Clock
	ttl    time.Duration

	mu     sync.Mutex
	ok     bool // Init succeeded and Close not yet called
	read   time.Time
	cached []task.GPU
	warned map[string]bool // field errors already logged, by "index/field"
}

var _ Collector = (*NVML)(nil)

// NewNVML initialises NVML. It never fails: without a driver the collector
// reports zero GPUs, and says so once in the log.
func NewNVML(logger *slog.Logger, opts ...Option) Collector {
	if logger == nil {
		logger = slog.Default()
	}
	n := &NVML{logger: logger, clock: clock.Real{}, ttl: DefaultCacheTTL, warned: map[string]bool{}}
	for _, o := range opts {
		o(n)
	}
	if n.lib == nil {
		n.lib = FromNVML(nvml.New())
	}
	if ret := n.lib.Init(); ret != nvml.SUCCESS {
		// Nothing else of NVML may be called now, Shutdown included.
		n.logger.Info("NVML unavailable; reporting no GPUs", "reason", ret.Error())
		return n
	}
	n.ok = true
	return n
}

// Available reports whether NVML initialised.
func (n *NVML) Available() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ok
}

// Close shuts NVML down if it was initialised. It is safe to call twice.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ok {
		return nil
	}
	n.ok = false
	n.cached = nil
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %s", ret.Error())
	}
	return nil
}

// GPUs returns every readable GPU, in NVML index order. A field NVML cannot
// report (NOT_SUPPORTED, no permission, ...) is left zero. The slice is the
// caller's to keep; it is empty, not nil, when there is no GPU (so it
// encodes as [] in a heartbeat).
func (n *NVML) GPUs(ctx context.Context) []task.GPU {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.ok || ctx.Err() != nil {
		return []task.GPU{}
	}
	now := n.clock.Now()
	if n.cached == nil || n.ttl <= 0 || !now.Before(n.read.Add(n.ttl)) {
		n.cached = n.readLocked()
		n.read = now
	}
	return append([]task.GPU{}, n.cached...)
}

func (n *NVML) readLocked() []task.GPU {
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		n.warnOnceLocked("count", "device count", ret)
		return []task.GPU{}
	}
	gpus := make([]task.GPU, 0, count)
	for i := 0; i < count; i++ {
		d, ret := n.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			n.warnOnceLocked(fmt.Sprintf("%d/handle", i), "device handle", ret)
			continue
		}
		gpus = append(gpus, n.readDeviceLocked(i, d))
	}
	return gpus
}

const mib = 1 << 20

func (n *NVML) readDeviceLocked(i int, d Device) task.GPU {
	g := task.GPU{Index: i}
	check := func(field string, ret nvml.Return) bool {
		if ret == nvml.SUCCESS {
			return true
		}
		if ret != nvml.ERROR_NOT_SUPPORTED {
			n.warnOnceLocked(fmt.Sprintf("%d/%s", i, field), field, ret)
		}
		return false
	}
	if v, ret := d.GetName(); check("name", ret) {
		g.Name = v
	}
	if v, ret := d.GetUUID(); check("uuid", ret) {
		g.UUID = v
	}
	if m, ret := d.GetMemoryInfo(); check("memory", ret) {
		g.MemoryTotalMiB, g.MemoryUsedMiB, g.MemoryFreeMiB = m.Total/mib, m.Used/mib, m.Free/mib
	}
	if u, ret := d.GetUtilizationRates(); check("utilization", ret) {
		g.GPUUtilPct, g.MemUtilPct = u.Gpu, u.Memory
	}
	if v, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); check("temperature", ret) {
		g.TemperatureC = v
	}
	if v, ret := d.GetPowerUsage(); check("power", ret) {
		g.PowerW = float64(v) / 1000 // NVML reports milliwatts
	}
	if v, ret := d.GetClockInfo(nvml.CLOCK_SM); check("sm_clock", ret) {
		g.SMClockMHz = v
	}
	if v, ret := d.GetClockInfo(nvml.CLOCK_MEM); check("mem_clock", ret) {
		g.MemClockMHz = v
	}
	if cur, _, ret := d.GetMigMode(); check("mig_mode", ret) {
		g.MIGEnabled = cur == nvml.DEVICE_MIG_ENABLE
	}
	if v, ret := d.GetTotalEnergyConsumption(); check("energy", ret) {
		g.EnergyMJ = v
	}
	return g
}

func (n *NVML) warnOnceLocked(key, what string, ret nvml.Return) {
	if n.warned[key] {
		return
	}
	n.warned[key] = true
	n.logger.Warn("NVML read failed; field left zero", "field", what, "key", key, "reason", ret.Error())
}
