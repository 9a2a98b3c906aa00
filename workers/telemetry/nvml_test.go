package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tollgate-ai/tollgate/internal/clock"
	"github.com/tollgate-ai/tollgate/internal/task"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// h100 is a fully readable mock device.
func h100(uuid string) *mock.Device {
	return &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 81559 * mib, Used: 1024*mib + 512, Free: 80535 * mib}, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 87, Memory: 41}, nvml.SUCCESS
		},
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 64, nvml.SUCCESS
		},
		GetPowerUsageFunc: func() (uint32, nvml.Return) { return 312_500, nvml.SUCCESS },
		GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
			switch c {
			case nvml.CLOCK_SM:
				return 1980, nvml.SUCCESS
			case nvml.CLOCK_MEM:
				return 2619, nvml.SUCCESS
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		},
		GetMigModeFunc:                func() (int, int, nvml.Return) { return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS },
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return 123_456_789, nvml.SUCCESS },
	}
}

// unsupported is a device (a consumer card, say) that supports only name and UUID.
func unsupported() *mock.Device {
	ns := nvml.ERROR_NOT_SUPPORTED
	return &mock.Device{
		GetNameFunc:                   func() (string, nvml.Return) { return "NVIDIA GeForce RTX 3060", nvml.SUCCESS },
		GetUUIDFunc:                   func() (string, nvml.Return) { return "GPU-consumer", nvml.SUCCESS },
		GetMemoryInfoFunc:             func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 1}, ns },
		GetUtilizationRatesFunc:       func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 9}, ns },
		GetTemperatureFunc:            func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 9, ns },
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return 9, nvml.ERROR_NO_PERMISSION },
		GetClockInfoFunc:              func(nvml.ClockType) (uint32, nvml.Return) { return 9, ns },
		GetMigModeFunc:                func() (int, int, nvml.Return) { return 1, 1, ns },
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return 9, ns },
	}
}

func mockLib(devs ...nvml.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if devs[i] == nil {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

func TestGPUsMapping(t *testing.T) {
	fullGPU := task.GPU{
		Name: "NVIDIA H100 80GB HBM3", UUID: "GPU-aaaa",
		MemoryTotalMiB: 81559, MemoryUsedMiB: 1024, MemoryFreeMiB: 80535,
		GPUUtilPct: 87, MemUtilPct: 41, TemperatureC: 64, PowerW: 312.5,
		SMClockMHz: 1980, MemClockMHz: 2619, MIGEnabled: true, EnergyMJ: 123_456_789,
	}
	tests := []struct {
		name string
		devs []nvml.Device
		want []task.GPU
	}{
		{"no devices", nil, []task.GPU{}},
		{"every field", []nvml.Device{h100("GPU-aaaa")}, []task.GPU{fullGPU}},
		{"unsupported fields stay zero", []nvml.Device{unsupported()},
			[]task.GPU{{Name: "NVIDIA GeForce RTX 3060", UUID: "GPU-consumer"}}},
		{"lost device skipped, index kept", []nvml.Device{nil, h100("GPU-bbbb")},
			[]task.GPU{func() task.GPU { g := fullGPU; g.Index, g.UUID = 1, "GPU-bbbb"; return g }()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewNVML(quietLogger(), WithLib(FromNVML(mockLib(tc.devs...))))
			defer c.Close()
			got := c.GPUs(context.Background())
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("GPUs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInitFailureCallsNothingElse(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION} {
		t.Run(ret.Error(), func(t *testing.T) {
			// Only InitFunc is set: any other call would panic in the mock,
			// and the call records must show Init alone.
			lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
			var logs strings.Builder
			c := NewNVML(slog.New(slog.NewTextHandler(&logs, nil)), WithLib(FromNVML(lib)), WithCacheTTL(0))
			for i := 0; i < 3; i++ {
				if got := c.GPUs(context.Background()); len(got) != 0 {
					t.Fatalf("GPUs = %v, want none", got)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if n := len(lib.InitCalls()); n != 1 {
				t.Errorf("Init called %d times, want 1", n)
			}
			if n := len(lib.ShutdownCalls()) + len(lib.DeviceGetCountCalls()) + len(lib.DeviceGetHandleByIndexCalls()); n != 0 {
				t.Errorf("%d NVML calls after failed Init, want 0", n)
			}
			if n := strings.Count(logs.String(), "NVML unavailable"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logs.String())
			}
		})
	}
}

func TestGPUsCache(t *testing.T) {
	lib := mockLib(h100("GPU-aaaa"))
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	c := NewNVML(quietLogger(), WithLib(FromNVML(lib)), WithClock(clk), WithCacheTTL(time.Second))
	ctx := context.Background()
	c.GPUs(ctx)
	clk.Advance(999 * time.Millisecond)
	got := c.GPUs(ctx)
	got[0].Name = "caller may modify its copy"
	if n := len(lib.DeviceGetCountCalls()); n != 1 {
		t.Fatalf("within TTL: %d reads, want 1", n)
	}
	clk.Advance(time.Millisecond)
	if g := c.GPUs(ctx); g[0].Name != "NVIDIA H100 80GB HBM3" {
		t.Fatalf("cached copy was modified: %q", g[0].Name)
	}
	if n := len(lib.DeviceGetCountCalls()); n != 2 {
		t.Fatalf("after TTL: %d reads, want 2", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Fatalf("Shutdown called %d times, want 1", n)
	}
	if g := c.GPUs(ctx); len(g) != 0 {
		t.Fatalf("after Close: %v", g)
	}
	c.Close()
	if n := len(lib.ShutdownCalls()); n != 1 {
		t.Fatalf("second Close called Shutdown again")
	}
}

type staticSource []task.GPU

func (s staticSource) GPUs(context.Context) []task.GPU { return append([]task.GPU(nil), s...) }

func TestDCGMHandler(t *testing.T) {
	c := NewNVML(quietLogger(), WithLib(FromNVML(mockLib(h100("GPU-aaaa"), unsupported()))))
	defer c.Close()

	tests := []struct {
		name     string
		source   Source
		hostname string
		want     map[string]string // "metric gpu" -> value, checked for GPU 0
		gpus     int
	}{
		{"two gpus", c, "node-7", map[string]string{
			"DCGM_FI_DEV_GPU_UTIL": "87", "DCGM_FI_DEV_MEM_COPY_UTIL": "41",
			"DCGM_FI_DEV_FB_USED": "1024", "DCGM_FI_DEV_FB_FREE": "80535", "DCGM_FI_DEV_FB_TOTAL": "81559",
			"DCGM_FI_DEV_GPU_TEMP": "64", "DCGM_FI_DEV_POWER_USAGE": "312.5",
			"DCGM_FI_DEV_SM_CLOCK": "1980", "DCGM_FI_DEV_MEM_CLOCK": "2619",
			"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "123456789", "DCGM_FI_DEV_MIG_MODE": "1",
		}, 2},
		{"no gpus", staticSource(nil), "", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			DCGMHandler(tc.source, tc.hostname).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			families, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, rec.Body)
			}
			if tc.gpus == 0 {
				if len(families) != 0 {
					t.Fatalf("want empty exposition, got %d families", len(families))
				}
				return
			}
			if len(families) != len(dcgmMetrics) {
				t.Errorf("%d families, want %d", len(families), len(dcgmMetrics))
			}
			for name, want := range tc.want {
				f, ok := families[name]
				if !ok {
					t.Errorf("missing %s", name)
					continue
				}
				wantType := dto.MetricType_GAUGE
				if name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" {
					wantType = dto.MetricType_COUNTER
				}
				if f.GetType() != wantType {
					t.Errorf("%s type %v, want %v", name, f.GetType(), wantType)
				}
				if len(f.GetMetric()) != tc.gpus {
					t.Errorf("%s: %d series, want %d", name, len(f.GetMetric()), tc.gpus)
				}
				m := f.GetMetric()[0]
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				wantLabels := map[string]string{"gpu": "0", "UUID": "GPU-aaaa", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-7"}
				if diff := cmp.Diff(wantLabels, labels); diff != "" {
					t.Errorf("%s labels (-want +got):\n%s", name, diff)
				}
				v := m.GetGauge().GetValue()
				if wantType == dto.MetricType_COUNTER {
					v = m.GetCounter().GetValue()
				}
				if got := strconvFloat(v); got != want {
					t.Errorf("%s = %s, want %s", name, got, want)
				}
			}
		})
	}
}

func strconvFloat(v float64) string { return model.SampleValue(v).String() }

func TestReadErrorsLoggedOnce(t *testing.T) {
	lib := mockLib(unsupported()) // power read fails with NO_PERMISSION, the rest NOT_SUPPORTED
	var logs strings.Builder
	c := NewNVML(slog.New(slog.NewTextHandler(&logs, nil)), WithLib(FromNVML(lib)), WithCacheTTL(0))
	defer c.Close()
	for i := 0; i < 3; i++ {
		c.GPUs(context.Background())
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "field=power") {
		t.Fatalf("want one warning about power (NOT_SUPPORTED is silent), got:\n%s", logs.String())
	}

	lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if g := c.GPUs(context.Background()); len(g) != 0 {
		t.Fatalf("count failure: %v", g)
	}
}

func TestWriteDCGMMatchesHandler(t *testing.T) {
	src := staticSource{{Index: 0, Name: "NVIDIA H200", UUID: "GPU-x", GPUUtilPct: 5}}
	var b strings.Builder
	if err := WriteDCGM(&b, src, ""); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	DCGMHandler(src, "").ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if b.String() != rec.Body.String() {
		t.Fatalf("WriteDCGM:\n%s\nhandler:\n%s", b.String(), rec.Body.String())
	}
	if !strings.Contains(b.String(), `DCGM_FI_DEV_GPU_UTIL{UUID="GPU-x",gpu="0",modelName="NVIDIA H200"} 5`) {
		t.Fatalf("unexpected exposition:\n%s", b.String())
	}
}
