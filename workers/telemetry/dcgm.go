package telemetry

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/tollgate-ai/tollgate/internal/task"
)

// Source is what DCGMHandler reads; Collector satisfies it.
type Source interface {
	GPUs(ctx context.Context) []task.GPU
}

// dcgmMetric is one dcgm-exporter field: its name, type and help string as
// in dcgm-exporter's default-counters.csv, and how to read it from a GPU.
type dcgmMetric struct {
	name  string
	typ   prometheus.ValueType
	help  string
	value func(g *task.GPU) float64
}

var dcgmMetrics = []dcgmMetric{
	{"DCGM_FI_DEV_SM_CLOCK", prometheus.GaugeValue, "SM clock frequency (in MHz).", func(g *task.GPU) float64 { return float64(g.SMClockMHz) }},
	{"DCGM_FI_DEV_MEM_CLOCK", prometheus.GaugeValue, "Memory clock frequency (in MHz).", func(g *task.GPU) float64 { return float64(g.MemClockMHz) }},
	{"DCGM_FI_DEV_GPU_TEMP", prometheus.GaugeValue, "GPU temperature (in C).", func(g *task.GPU) float64 { return float64(g.TemperatureC) }},
	{"DCGM_FI_DEV_POWER_USAGE", prometheus.GaugeValue, "Power draw (in W).", func(g *task.GPU) float64 { return g.PowerW }},
	{"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", prometheus.CounterValue, "Total energy consumption since boot (in mJ).", func(g *task.GPU) float64 { return float64(g.EnergyMJ) }},
	{"DCGM_FI_DEV_GPU_UTIL", prometheus.GaugeValue, "GPU utilization (in %).", func(g *task.GPU) float64 { return float64(g.GPUUtilPct) }},
	{"DCGM_FI_DEV_MEM_COPY_UTIL", prometheus.GaugeValue, "Memory utilization (in %).", func(g *task.GPU) float64 { return float64(g.MemUtilPct) }},
	{"DCGM_FI_DEV_FB_FREE", prometheus.GaugeValue, "Framebuffer memory free (in MiB).", func(g *task.GPU) float64 { return float64(g.MemoryFreeMiB) }},
	{"DCGM_FI_DEV_FB_USED", prometheus.GaugeValue, "Framebuffer memory used (in MiB).", func(g *task.GPU) float64 { return float64(g.MemoryUsedMiB) }},
	{"DCGM_FI_DEV_FB_TOTAL", prometheus.GaugeValue, "Framebuffer memory total (in MiB).", func(g *task.GPU) float64 { return float64(g.MemoryTotalMiB) }},
	{"DCGM_FI_DEV_MIG_MODE", prometheus.GaugeValue, "MIG mode of the device (1 = enabled).", func(g *task.GPU) float64 {
		if g.MIGEnabled {
			return 1
		}
		return 0
	}},
}

// readTimeout bounds one GPU read made for a scrape.
const readTimeout = 5 * time.Second

// dcgmCollector is a prometheus.Collector over a Source.
type dcgmCollector struct {
	source   Source
	hostname string
	descs    []*prometheus.Desc
}

// DCGMHandler serves the GPUs of source as Prometheus text in dcgm-exporter's
// names and units, with its labels gpu, UUID and modelName (the GPU's model
// name, as dcgm-exporter uses it), plus Hostname when hostname is not empty.
// With no GPU it serves an empty exposition.
func DCGMHandler(source Source, hostname string) http.Handler {
	return promhttp.HandlerFor(dcgmRegistry(source, hostname), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// WriteDCGM writes what DCGMHandler serves, once, in the Prometheus text format.
func WriteDCGM(w io.Writer, source Source, hostname string) error {
	families, err := dcgmRegistry(source, hostname).Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}

func dcgmRegistry(source Source, hostname string) *prometheus.Registry {
	labels := []string{"gpu", "UUID", "modelName"}
	if hostname != "" {
		labels = append(labels, "Hostname")
	}
	c := &dcgmCollector{source: source, hostname: hostname}
	for _, m := range dcgmMetrics {
		c.descs = append(c.descs, prometheus.NewDesc(m.name, m.help, labels, nil))
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return reg
}

func (c *dcgmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *dcgmCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	gpus := c.source.GPUs(ctx)
	for i := range gpus {
		g := &gpus[i]
		labels := []string{strconv.Itoa(g.Index), g.UUID, g.Name}
		if c.hostname != "" {
			labels = append(labels, c.hostname)
		}
		for j, m := range dcgmMetrics {
			ch <- prometheus.MustNewConstMetric(c.descs[j], m.typ, m.value(g), labels...)
		}
	}
}
