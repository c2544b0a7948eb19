package sim

import (
	"runtime"
	"runtime/debug"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSweep runs the default workload's first 20 seeds for 90
// simulated seconds each, as a sweep does (one seed at a time), and
// reports the simulator's rate: simulated seconds per CPU second of this
// process (sim-s/cpu-s; the goal of issue [7/8] is 2,000), at dmqsim's
// GOGC.
func BenchmarkSweep(b *testing.B) {
	const seeds, duration = 20, 90 * time.Second
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	runtime.GC()
	before := cpuTime(b)
	simulated := time.Duration(0)
	for b.Loop() {
		for seed := uint64(1); seed <= seeds; seed++ {
			result := Run(OptionsFromSeed(seed, duration, 0))
			if !result.OK() {
				b.Fatalf("seed %d: %s", seed, result.Violations[0])
			}
			simulated += result.Simulated
		}
	}
	b.ReportMetric(simulated.Seconds()/(cpuTime(b)-before).Seconds(), "sim-s/cpu-s")
}

// cpuTime is this process's user and system time.
func cpuTime(b *testing.B) time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		b.Fatal(err)
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
