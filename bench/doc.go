// Package bench holds Tollgate's whole-system benchmarks: an open-loop load
// generator (bench/loadgen), a fast mock OpenAI upstream
// (bench/mockupstream), the gateway-overhead scenario (bench/overhead), the
// scheduling-policy simulation (bench/sched), and the shared report format
// (bench/report) and plots (bench/plot). None of it is used by production
// code; `tollgate bench ...` runs it.
package bench
